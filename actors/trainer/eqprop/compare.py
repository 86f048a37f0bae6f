"""EqProp vs backprop, same architecture, through the trainer: test accuracy over seeds, paired CIs.

    from actors.trainer.eqprop.compare import CompareSpec, compare, eqprop_demo_stage
    summary = compare(CompareSpec(datasets=["digits", "mnist5k"], seeds=5), "runs/eqprop_compare")
    stage = eqprop_demo_stage("runs/demo/eqprop")   # a short MNIST-5k run, EqProp beside backprop (< 60 s)

For each data set and seed i: a stratified split with seed i (actors.trainer.eqprop.data, written as
shards), then the trainer's engine (actors.trainer.engine.train: the same loop, checkpoints and
optimizer as `python -m jobs.train`) trains `eqprop_mlp` (EqProp, symmetric nudging) and `eqprop_bp`
(BPTT through the same settling loop) from the same preset, model seed and trainer seed i; the final
checkpoint's model.pt is loaded and scored on the held-out split. The two methods share split, init and
data order, so their difference per seed is paired: mean difference and a 95% Student-t interval
(scipy.stats.t, n - 1 degrees of freedom). Writes compare.json, compare.md and compare.png.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from actors.common.config import Strict
from actors.common.errors import InputError

__all__ = ["CompareSpec", "compare", "eqprop_demo_stage", "evaluate_spec", "load_train_spec", "paired_ci",
           "train_and_evaluate"]

PRESETS = {"digits": "eqprop_digits.yaml", "mnist5k": "eqprop_mnist.yaml"}
METHODS = {"eqprop": "eqprop_mlp", "backprop": "eqprop_bp"}


class CompareSpec(Strict):
    datasets: list[str] = Field(default_factory=lambda: ["digits", "mnist5k"], min_length=1, max_length=2)
    seeds: int = Field(5, ge=2, le=100)
    first_seed: int = Field(0, ge=0, le=2**31 - 1000)
    test_fraction: float = Field(0.2, ge=0.05, le=0.5)
    steps: dict[str, int] = Field(default_factory=dict)   # per data set override of the preset's steps
    set: dict[str, Any] = Field(default_factory=dict)     # dotted TrainSpec overrides for both methods


def paired_ci(a: list[float], b: list[float], level: float = 0.95) -> dict[str, float]:
    """Mean of a - b and its two-sided Student-t interval at `level` (paired samples, n >= 2)."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    if n < 2:
        raise InputError("seeds", f"{n} paired runs", ">= 2 for an interval")
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(n))
    h = float(stats.t.ppf(0.5 + level / 2, n - 1) * se)
    return {"mean": mean, "lo": mean - h, "hi": mean + h, "se": se, "n": n}


def _mean_ci(a: list[float], level: float = 0.95) -> dict[str, float]:
    from scipy import stats

    x = np.asarray(a, float)
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")
    h = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * se) if len(x) > 1 else float("nan")
    return {"mean": float(x.mean()), "lo": float(x.mean() - h), "hi": float(x.mean() + h)}


def load_train_spec(config: str | Path, overrides: dict[str, Any] | None = None):
    """A TrainSpec from a YAML file (or a preset name of configs/train) with dotted overrides; errors
    name the field."""
    from pydantic import ValidationError

    from actors.common.config import apply_overrides, load_yaml
    from actors.common.errors import from_validation
    from actors.trainer.config import TrainSpec

    p = Path(config)
    if not p.is_file():
        from configs import preset

        p = preset("train", str(config))
        if not p.is_file():
            raise InputError("config", f"no such file or preset {str(config)!r}", "a train YAML")
    raw = apply_overrides(load_yaml(p.read_text()) or {}, overrides)
    try:
        return TrainSpec.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(exc) from None


def train_and_evaluate(config: str | Path, data_dir: str | Path, run_dir: str | Path, *, name: str,
                       overrides: dict[str, Any] | None = None, keep_model: bool = False) -> dict[str, Any]:
    """Train preset `config` as model `name` with the trainer engine on DATA/train, score DATA/test with
    the final checkpoint's weights. Returns accuracy, wall seconds, the final logged metrics (and the
    loaded model as "module" when `keep_model`)."""
    spec = load_train_spec(config, {**(overrides or {}), "model.name": name})
    return evaluate_spec(spec, data_dir, run_dir, keep_model=keep_model)


def evaluate_spec(spec, data_dir: str | Path, run_dir: str | Path, *, keep_model: bool = False,
                  report=None) -> dict[str, Any]:
    """train_and_evaluate for a TrainSpec (`report(metrics, ckpt)` as the engine's, e.g. Tune's)."""
    import torch

    from actors.trainer.engine import train
    from actors.trainer.eqprop.model import accuracy
    from actors.trainer.registry import build_model
    from actors.trainer.shards import ShardDataset

    data_dir = Path(data_dir)
    t0 = time.perf_counter()
    summary = train(spec, data_dir / "train", run_dir, log=None, report=report)
    train_s = time.perf_counter() - t0
    model = build_model(spec.model.name, spec.model.cfg)
    model.load_state_dict(torch.load(Path(summary["latest_checkpoint"]) / "model.pt", map_location="cpu",
                                     weights_only=True))
    model.eval()
    test = ShardDataset(data_dir / "test").load_all()
    t1 = time.perf_counter()
    acc = accuracy(model, test["x"], test["y"])
    out = {"model_name": spec.model.name, "accuracy": acc, "train_s": train_s, "eval_s": time.perf_counter() - t1,
           "steps": summary["steps"], "final": summary["final"], "run_dir": str(run_dir),
           "checkpoint": summary["latest_checkpoint"], "n_test": int(len(test["y"]))}
    if keep_model:
        out["module"] = model
    return out


def compare(spec: CompareSpec, out: str | Path, *, log=print) -> dict[str, Any]:
    """Every data set x seed x method (see the module docstring); writes compare.json / .md / .png."""
    from actors.common.storage import atomic_write_json, atomic_write_text, claim_out_dir
    from actors.trainer.eqprop.data import DATASETS, EqPropDataSpec, write_dataset

    for d in spec.datasets:
        if d not in DATASETS:
            raise InputError("datasets", f"unknown data set {d!r}", ", ".join(DATASETS))
    out = Path(out)
    claim_out_dir(out, {"eqprop_compare": spec.model_dump(mode="json")}, "EqProp comparison")
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    runs_file = out / "runs.jsonl"
    done = {}
    if runs_file.exists():   # resume: finished runs are kept
        for line in runs_file.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            done[(r["dataset"], r["seed"], r["method"])] = r
    for dataset in spec.datasets:
        for seed in range(spec.first_seed, spec.first_seed + spec.seeds):
            data = out / "data" / f"{dataset}-split{seed}"
            write_dataset(EqPropDataSpec(dataset=dataset, test_fraction=spec.test_fraction, seed=seed), data)
            for method, name in METHODS.items():
                key = (dataset, seed, method)
                if key in done:
                    rows.append(done[key])
                    continue
                over = {**spec.set, "seed": seed, "model.cfg.seed": seed}
                if dataset in spec.steps:
                    over["steps"] = spec.steps[dataset]
                r = train_and_evaluate(PRESETS[dataset], data, out / "runs" / f"{dataset}-{seed}-{method}", name=name,
                                       overrides=over)
                row = {"dataset": dataset, "seed": seed, "method": method, "accuracy": r["accuracy"],
                       "train_s": r["train_s"], "steps": r["steps"], "final_loss": r["final"].get("loss"),
                       "final_train_accuracy": r["final"].get("accuracy")}
                with open(runs_file, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                rows.append(row)
                if log:
                    log(f"{dataset} seed {seed} {method}: test accuracy {r['accuracy']:.4f} ({r['train_s']:.1f} s)")
    table = summarize(rows, spec.datasets)
    result = {"spec": spec.model_dump(mode="json"), "table": table, "runs": rows, "wall_s": time.perf_counter() - t0}
    atomic_write_json(out / "compare.json", result)
    atomic_write_text(out / "compare.md", markdown(table))
    plot_compare(rows, table, out / "compare.png")
    return result


def summarize(rows: list[dict[str, Any]], datasets: list[str]) -> list[dict[str, Any]]:
    """Per data set: each method's mean accuracy with its 95% t-interval and the paired EqProp - backprop
    difference (in accuracy points, i.e. percent)."""
    table = []
    for d in datasets:
        by = {m: {r["seed"]: r for r in rows if r["dataset"] == d and r["method"] == m} for m in METHODS}
        seeds = sorted(set(by["eqprop"]) & set(by["backprop"]))
        ep = [100 * by["eqprop"][s]["accuracy"] for s in seeds]
        bp = [100 * by["backprop"][s]["accuracy"] for s in seeds]
        diff = paired_ci(ep, bp)
        table.append({"dataset": d, "seeds": seeds, "eqprop": _mean_ci(ep), "backprop": _mean_ci(bp), "diff": diff,
                      "within_1pt": bool(diff["lo"] > -1.0),
                      "train_s": {m: float(np.mean([by[m][s]["train_s"] for s in seeds])) for m in METHODS}})
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    """The table as GitHub markdown (accuracy in percent, 95% t-intervals)."""
    lines = ["| data set | seeds | EqProp (symmetric) % | backprop (BPTT) % | EqProp - backprop, pts [95% CI] | "
             "train s / run (EP, BP) |", "| --- | --- | --- | --- | --- | --- |"]
    for t in table:
        e, b, d = t["eqprop"], t["backprop"], t["diff"]
        lines.append(f"| {t['dataset']} | {len(t['seeds'])} | {e['mean']:.2f} [{e['lo']:.2f}, {e['hi']:.2f}] | "
                     f"{b['mean']:.2f} [{b['lo']:.2f}, {b['hi']:.2f}] | {d['mean']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}] | "
                     f"{t['train_s']['eqprop']:.1f}, {t['train_s']['backprop']:.1f} |")
    return "\n".join(lines) + "\n"


def plot_compare(rows: list[dict[str, Any]], table: list[dict[str, Any]], path: Path) -> Path:
    """Per data set: each seed's accuracy for both methods (paired lines) and the means with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from actors.common.storage import atomic_write_figure

    fig, axes = plt.subplots(1, len(table), figsize=(4.2 * len(table), 3.6), squeeze=False)
    for ax, t in zip(axes[0], table):
        for s in t["seeds"]:
            ys = [100 * next(r["accuracy"] for r in rows if r["dataset"] == t["dataset"] and r["seed"] == s
                             and r["method"] == m) for m in METHODS]
            ax.plot([0, 1], ys, "-o", color="0.7", ms=3, lw=0.8)
        for i, m in enumerate(METHODS):
            c = t[m]
            ax.errorbar([i + (0.08 if i else -0.08)], [c["mean"]], yerr=[[c["mean"] - c["lo"]], [c["hi"] - c["mean"]]],
                        fmt="s", color="C0" if m == "eqprop" else "C1", capsize=4)
        d = t["diff"]
        ax.set_xticks([0, 1], ["EqProp", "backprop (BPTT)"])
        ax.set_xlim(-0.4, 1.4)
        ax.set_title(f"{t['dataset']}: diff {d['mean']:+.2f} pts [{d['lo']:+.2f}, {d['hi']:+.2f}]", fontsize=9)
        ax.set_ylabel("test accuracy %")
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)
    return path


def eqprop_demo_stage(out_dir: str | Path, *, steps: int = 310, seed: int = 0) -> dict[str, Any]:
    """The demo's EqProp stage: MNIST-5k (a seeded 80/20 split), EqProp and its backprop twin through the
    trainer for `steps` steps of batch 64 each (310 = 5 epochs), test accuracy side by side. About 10 s
    on 2 CPU cores. Writes OUT/eqprop_demo.json; returns {"eqprop_accuracy", "backprop_accuracy",
    "difference_pts", "steps", "n_test", "wall_s", ...}. Runs torch on one thread (restored after)."""
    import torch

    out = Path(out_dir)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # small nets: a second thread only contends (and collapses on a busy machine)
    try:
        return _demo(out, steps, seed, t0)
    finally:
        torch.set_num_threads(threads)


def _demo(out: Path, steps: int, seed: int, t0: float) -> dict[str, Any]:
    from actors.common.storage import atomic_write_json
    from actors.trainer.eqprop.data import EqPropDataSpec, write_dataset

    data = out / "mnist5k"
    write_dataset(EqPropDataSpec(dataset="mnist5k", seed=seed), data)
    over = {"steps": int(steps), "seed": seed, "model.cfg.seed": seed, "checkpoint.every": int(steps),
            "log_every": max(1, int(steps) // 5), "report_every": max(1, int(steps) // 5)}
    res = {}
    for method, name in METHODS.items():
        run = out / "runs" / f"{method}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{time.time_ns() % 10**6}"
        res[method] = train_and_evaluate(PRESETS["mnist5k"], data, run, name=name, overrides=over)
    stage = {"dataset": "mnist5k", "steps": int(steps), "seed": seed, "n_test": res["eqprop"]["n_test"],
             "eqprop_accuracy": res["eqprop"]["accuracy"], "backprop_accuracy": res["backprop"]["accuracy"],
             "difference_pts": 100 * (res["eqprop"]["accuracy"] - res["backprop"]["accuracy"]),
             "eqprop_train_s": res["eqprop"]["train_s"], "backprop_train_s": res["backprop"]["train_s"],
             "wall_s": time.perf_counter() - t0}
    atomic_write_json(out / "eqprop_demo.json", stage)
    return stage
