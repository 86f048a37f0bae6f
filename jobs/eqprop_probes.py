"""EqProp deep signal probes (depths 10/100/500/1000, plain and residual) and the sleep phase's effect.

    python -m jobs.eqprop_probes --out runs/eqprop_probes
    python -m jobs.eqprop_probes --out runs/eqprop_probes --set depths=[10,100] sleep=true

Probes (actors/trainer/eqprop/probes.py): perturb the output of a width-32 EqPropNet by 0.1 N(0, 1) at its
exact fixed point and measure each layer's response; writes OUT/probes.json and OUT/probes.png. With
`sleep: true` also the sleep phase (actors/trainer/eqprop/sleep.py: 100 anti-Hebbian steps, lr 0.01, on
noise) — its effect on the probes and on the test accuracy of an EqProp model trained on sklearn digits
by the trainer — in OUT/sleep.json. In-process, no Ray.
"""
from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field

from actors.common.config import Strict
from jobs import cli


class ProbeJobSpec(Strict):
    depths: list[int] = Field(default_factory=lambda: [10, 100, 500, 1000], min_length=1, max_length=8)
    width: int = Field(32, ge=1, le=256)
    batch: int = Field(8, ge=1, le=256)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    sleep: bool = True
    sleep_steps: int = Field(100, ge=1, le=10_000)
    sleep_lr: float = Field(0.01, gt=0, le=10)


def run(spec: ProbeJobSpec, out: Path) -> dict:
    from actors.trainer.eqprop.data import EqPropDataSpec, write_dataset
    from actors.trainer.eqprop.probes import run_probes
    from actors.trainer.eqprop.sleep import SleepSpec, sleep_study

    summary = run_probes(out, depths=tuple(spec.depths), width=spec.width, batch=spec.batch, seed=spec.seed)
    rows = [{k: r[k] for k in ("label", "depth", "signal_deepest", "layers_above_1pct", "hidden_layers", "wall_s")}
            for r in summary["rows"]]
    result = {"probes": rows}
    if spec.sleep:
        write_dataset(EqPropDataSpec(dataset="digits", seed=spec.seed), out / "digits")
        s = sleep_study(out, data_dir=out / "digits", probe_depths=tuple(d for d in spec.depths if d <= 100) or (10,),
                        spec=SleepSpec(steps=spec.sleep_steps, lr=spec.sleep_lr, seed=spec.seed))
        result["sleep"] = {"accuracy": s["accuracy"], "probes": s["probes"]}
    return result


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="optional YAML of the probe job's fields", config_required=False,
                        set_example="depths=[10,100] sleep=false", address=False)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: the nets are small; more threads only contend on a busy machine)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    return cli.run_job(lambda: cli.load_spec(ProbeJobSpec, args.config, cli.parse_set(args.set)),
                       lambda spec: run(spec, Path(args.out)), ray=False)


if __name__ == "__main__":
    sys.exit(main())
