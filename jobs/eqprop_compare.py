"""EqProp vs backprop with the same architecture: test accuracy on MNIST-5k and sklearn digits over seeds.

    python -m jobs.eqprop_compare --out runs/eqprop_compare                       # 5 seeds, both data sets
    python -m jobs.eqprop_compare --out runs/eqprop_compare --set seeds=3 datasets=[digits]
    python -m jobs.eqprop_compare --out runs/eqprop_compare --set set={model.cfg.mode: holomorphic}

For each data set and seed: a seeded stratified split written as shards, then the trainer's engine trains
`eqprop_mlp` (EqProp, symmetric nudging) and `eqprop_bp` (BPTT through the same settling loop) from
configs/train/eqprop_{digits,mnist}.yaml with that seed, and the final checkpoint is scored on the test
split. Writes OUT/compare.json (every run; per data set the means with 95% t-intervals and the paired
difference's interval), OUT/compare.md (the table), OUT/compare.png, OUT/runs.jsonl (finished runs are
kept: a rerun resumes), OUT/data/ and OUT/runs/. In-process (no Ray): runs are seconds each on a CPU.
Engine: actors/trainer/eqprop/compare.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

from jobs import cli


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="optional YAML of CompareSpec fields", config_required=False,
                        set_example="seeds=3 datasets=[digits] steps={digits: 440}", address=False)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: the nets are small; more threads only contend on a busy machine)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    from actors.trainer.eqprop.compare import CompareSpec, compare

    return cli.run_job(lambda: cli.load_spec(CompareSpec, args.config, cli.parse_set(args.set)),
                       lambda spec: compare(spec, Path(args.out)), ray=False, keys=("table", "wall_s"))


if __name__ == "__main__":
    sys.exit(main())
