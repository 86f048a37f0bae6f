"""Evaluate a trained NeuroFMX checkpoint and the baselines on a jobs.neuro_data directory.

    python -m jobs.neuro_eval --checkpoint runs/train/nfmx_tiny --data runs/neuro/lorenz --out runs/eval/nfmx_tiny
    python -m jobs.neuro_eval --data runs/neuro/lorenz --out runs/eval/baselines          # baselines only
        [--set baseline_steps=300 few_shot_k=[1,5] baselines=[smoothing,psth_oracle]]

--checkpoint: a checkpoint directory (ckpt-<step> with meta.json and model.pt) or a run directory
(its latest checkpoint). Writes OUT/results.json, OUT/results.md (the table with the baselines and the
targets), OUT/rates.png (true vs predicted rates), OUT/rate_r2.png, OUT/co_bps.png, OUT/few_shot.png,
all atomically. No Ray: the evaluation runs in this process. On the shared 2-core CPU machine the
Lorenz set with the default 1,500-step GRU and NDT baselines took 22 min wall (13 min CPU), almost all
of it training those two; `--set baselines=[smoothing,psth_oracle]` takes about a minute.
Protocol: actors/neuro/evaluate.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from jobs import cli


def run(spec: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from actors.common.storage import atomic_write_json, atomic_write_text
    from actors.neuro import read_dataset
    from actors.neuro.evaluate import (
        check_layout,
        eval_device,
        evaluate,
        load_neurofmx,
        markdown_table,
        model_predictor,
    )
    from actors.neuro.plots import metric_bars, rate_examples

    torch.set_num_threads(max(1, int(args.threads)))
    out = Path(args.out)
    data, data_spec = read_dataset(args.data)
    predictor, mods, ckpt_info = None, None, None
    if args.checkpoint:
        model, meta, ckpt = load_neurofmx(args.checkpoint)
        check_layout(model.cfg, data, ckpt)
        mods = model.modalities
        device = eval_device(spec)            # the model on the spec's device (auto: CUDA when present)
        predictor = model_predictor(model.to(device), mods, data.spikes.shape[-1], device=device,
                                    batch_size=256 if device == "cuda" else 64, samples=spec.mask_samples,
                                    feature_streams=spec.feature_streams)
        ckpt_info = {"path": str(ckpt), "step": meta["step"], "strategy": meta["strategy"],
                     "parameters": sum(p.numel() for p in model.parameters())}
    result = evaluate(data, spec, predictor, mods, log=lambda s: print(s, flush=True))
    predictions = result.pop("_predictions")
    result.update({"checkpoint": ckpt_info, "data": str(args.data), "eval": spec.model_dump(mode="json")})
    atomic_write_json(out / "results.json", result)
    atomic_write_text(out / "results.md", markdown_table(result))
    te = data.is_test
    show = {k: v for k, v in predictions.items() if "dropout" not in k and "only" not in k and "+lfp)" not in k}
    rate_examples(data.expected_counts[te], show, data.bin_s, out / "rates.png",
                  neurons=(0, 1, int(data.spikes.shape[-1]) - 1))
    metric_bars(result["rows"], "rate_r2", out / "rate_r2.png", {"target 0.90": 0.9})
    metric_bars(result["rows"], "co_bps", out / "co_bps.png")
    _few_shot_plot(result["rows"], out / "few_shot.png")
    print(markdown_table(result), flush=True)
    return {"results": str(out / "results.json"), "targets": result.get("targets")}


def _few_shot_plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from actors.common.storage import atomic_write_figure

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in rows:
        few = r.get("few_shot_latent_r2")
        if few:
            ks = [int(k) for k in few]
            ax.plot(ks, [few[k] for k in few], marker="o", label=r["method"])
    ax.set_xscale("log")
    ax.set_xlabel("training trials for the probe (K)")
    ax.set_ylabel("latent R2 (test)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="evaluation YAML (fields of actors.neuro.EvalSpec; optional)",
                        config_required=False, set_example="baseline_steps=300", address=False)
    ap.add_argument("--checkpoint", default=None, help="run or checkpoint directory of a NeuroFMX model (optional)")
    ap.add_argument("--data", required=True, help="a jobs.neuro_data output directory")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)
    from actors.neuro import EvalSpec

    return cli.run_job(lambda: cli.load_spec(EvalSpec, args.config, cli.parse_set(args.set)),
                       lambda spec: run(spec, args), ray=False, keys=("results", "targets"))


if __name__ == "__main__":
    sys.exit(main())
