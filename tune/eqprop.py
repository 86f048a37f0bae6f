"""A multi-objective architecture search for EqProp on Ray Tune: accuracy, inference time, training memory
and FLOPs, reported as the Pareto front (a table and a plot).

    from tune.eqprop import search_pareto, pareto_front
    from tune.trainer import load_search_spec
    spec = load_search_spec("configs/train/search_eqprop_digits.yaml")
    result = search_pareto(spec, "runs/eqprop/digits", "runs/tune_eqprop")   # pareto.json / .md / .png

The search YAML is a tune.trainer TrainSearchSpec (train_preset + space over dotted TrainSpec keys,
num_samples, seed, max_concurrent_trials): the space is sampled by Tune's seeded random / grid search
(BasicVariantGenerator(random_state=seed); lists such as `model.cfg.sizes` are valid choices) and every
trial runs to its last step (no early stopping: a Pareto search needs every trial's final objectives;
`scheduler` must be `asha` and its rung settings are unused). Each trial (a Tune function trainable)
trains its TrainSpec with the trainer's engine in the trial process on DATA/train, then measures:

- accuracy: on DATA/test, from the final checkpoint (maximised);
- inference_ms: wall milliseconds to classify 1,000 test samples (free phase + argmax, one torch
  thread, the best of 3 repeats; minimised);
- train_memory_mb: float32 bytes that one EqProp training step holds — parameters, their gradients
  and AdamW's two moments (4 x params) plus the states the gradient estimate keeps (free, nudged and
  one contrast: 3 x batch x sum of state widths); EqProp's activation memory does not grow with the
  settling steps (minimised);
- mflops: multiply-adds x 2 per inference sample: steps_free sweeps, each one matrix product per
  weight layer forward and one back (2 x 2 x n_j x n_{j+1}) (minimised).

`pareto_front(points, objectives)` keeps the trials no other trial dominates (at least as good in every
objective, better in one). Writes OUT/pareto.json (every trial, its objectives and whether it is on the
front), OUT/pareto.md (the front) and OUT/pareto.png (accuracy against each cost, front marked).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from actors.common.errors import InputError
from actors.common.storage import atomic_write_json, atomic_write_text
from tune.trainer import TrainSearchSpec, trial_spec

__all__ = ["OBJECTIVES", "model_costs", "pareto_front", "search_pareto", "trial_fn"]

OBJECTIVES: dict[str, str] = {"accuracy": "max", "inference_ms": "min", "train_memory_mb": "min", "mflops": "min"}


def pareto_front(points: list[dict[str, float]], objectives: dict[str, str] = OBJECTIVES) -> list[int]:
    """Indices of the non-dominated points: no other point is at least as good in every objective and
    strictly better in one (`objectives`: name -> "max" | "min"). Ties (equal in everything) all stay."""
    for name, mode in objectives.items():
        if mode not in ("max", "min"):
            raise InputError(f"objectives.{name}", f"{mode!r}", "max or min")
    sign = {k: (1.0 if m == "max" else -1.0) for k, m in objectives.items()}
    vals = [[sign[k] * float(p[k]) for k in objectives] for p in points]
    front = []
    for i, a in enumerate(vals):
        dominated = any(all(b_k >= a_k for a_k, b_k in zip(a, b)) and any(b_k > a_k for a_k, b_k in zip(a, b))
                        for j, b in enumerate(vals) if j != i)
        if not dominated:
            front.append(i)
    return front


def model_costs(cfg: dict[str, Any], batch_size: int) -> dict[str, float]:
    """The analytic objectives of an eqprop_mlp config: train_memory_mb and mflops (module docstring)."""
    sizes = [int(n) for n in cfg.get("sizes", (64, 128, 10))]
    steps_free = int(cfg.get("steps_free", 30))
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    states = sum(sizes[1:])
    mem = 4 * (4 * params + 3 * batch_size * states)
    macs = steps_free * sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return {"train_memory_mb": mem / 2**20, "mflops": 2 * macs / 1e6, "parameters": float(params)}


def _inference_ms(model: Any, X: Any, repeats: int = 3) -> float:
    import torch

    from actors.trainer.eqprop.model import accuracy

    n = min(1000, len(X))
    Xs = torch.as_tensor(X[:n])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            accuracy(model, Xs, torch.zeros(n, dtype=torch.long), batch=n)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return 1000.0 * best * 1000.0 / n


def trial_fn(config: dict[str, Any], *, search: dict[str, Any], data: str, trial_root: str) -> None:
    """The Tune trainable: train one sampled TrainSpec in this process, report the four objectives."""
    from ray import tune

    from actors.trainer.eqprop.compare import evaluate_spec
    from actors.trainer.shards import ShardDataset

    s = TrainSearchSpec.model_validate(search)
    spec = trial_spec(s.train.model_dump(mode="json"), config)
    root = Path(trial_root) / tune.get_context().get_trial_id()
    r = evaluate_spec(spec, data, root / "run", keep_model=True)
    test = ShardDataset(Path(data) / "test").load_all()
    costs = model_costs(spec.model.cfg, spec.batch_size)
    tune.report({"accuracy": r["accuracy"], "inference_ms": _inference_ms(r["module"], test["x"]),
                 "train_memory_mb": costs["train_memory_mb"], "mflops": costs["mflops"],
                 "parameters": costs["parameters"], "train_s": r["train_s"], "loss": r["final"].get("loss", float("nan"))})


def search_pareto(spec: TrainSearchSpec, data: str | Path, out: str | Path) -> dict[str, Any]:
    """Run the search (Ray must be initialised or reachable); returns and writes the Pareto summary."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from actors.trainer.shards import ShardDataset

    if spec.scheduler != "asha":
        raise InputError("scheduler", "the Pareto search runs every trial to its end", "asha (its rungs are unused)")
    if spec.train.model.name != "eqprop_mlp":
        raise InputError("train.model.name", f"{spec.train.model.name!r}", "eqprop_mlp")
    data = Path(data).resolve()
    for split in ("train", "test"):
        ShardDataset(data / split)   # a bad data directory fails before any trial
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    trainable = tune.with_parameters(trial_fn, search=spec.model_dump(mode="json"), data=str(data),
                                     trial_root=str(out / "trials"))
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": spec.train.workers.num_cpus}),
        param_space={k: d.to_tune() for k, d in spec.space.items()},
        tune_config=tune.TuneConfig(metric="accuracy", mode="max", num_samples=spec.num_samples,
                                    search_alg=BasicVariantGenerator(random_state=spec.seed,
                                                                     max_concurrent=spec.max_concurrent_trials),
                                    reuse_actors=True),   # later trials skip a process start (torch import)
        run_config=tune.RunConfig(name=spec.name, storage_path=str(out / "tune"), verbose=0))
    t0 = time.perf_counter()
    grid = tuner.fit()
    trials = []
    for r in grid:
        m = r.metrics or {}
        row = {"config": {k: r.config.get(k) for k in spec.space}, "error": str(r.error) if r.error else None}
        row.update({k: m.get(k) for k in (*OBJECTIVES, "parameters", "train_s", "loss")})
        trials.append(row)
    done = [t for t in trials if t["error"] is None and all(t[k] is not None for k in OBJECTIVES)]
    if not done:
        raise RuntimeError(f"no trial of {spec.name} finished: {[t['error'] for t in trials]}")
    front = set(pareto_front(done))
    for i, t in enumerate(done):
        t["pareto"] = i in front
    result = {"name": spec.name, "objectives": OBJECTIVES, "n_trials": len(trials), "n_done": len(done),
              "front": [t for t in done if t["pareto"]], "trials": trials, "wall_s": time.perf_counter() - t0}
    atomic_write_json(out / "pareto.json", result)
    atomic_write_text(out / "pareto.md", markdown(result))
    plot_pareto(done, out / "pareto.png")
    return result


def _fmt_config(c: dict[str, Any]) -> str:
    return ", ".join(f"{k.removeprefix('model.cfg.')}={v}" for k, v in c.items())


def markdown(result: dict[str, Any]) -> str:
    """The Pareto front as a markdown table, best accuracy first."""
    lines = ["| config | accuracy % | inference ms / 1k | train memory MB | MFLOPs / sample | params |",
             "| --- | --- | --- | --- | --- | --- |"]
    for t in sorted(result["front"], key=lambda t: -t["accuracy"]):
        lines.append(f"| {_fmt_config(t['config'])} | {100 * t['accuracy']:.2f} | {t['inference_ms']:.1f} | "
                     f"{t['train_memory_mb']:.3f} | {t['mflops']:.2f} | {int(t['parameters'] or 0)} |")
    return "\n".join(lines) + f"\n\n{len(result['front'])} of {result['n_done']} finished trials are on the front.\n"


def plot_pareto(trials: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy against each cost objective; front trials filled, the others hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from actors.common.storage import atomic_write_figure

    costs = [k for k, m in OBJECTIVES.items() if m == "min"]
    fig, axes = plt.subplots(1, len(costs), figsize=(4.2 * len(costs), 3.6), squeeze=False)
    for ax, k in zip(axes[0], costs):
        for on in (False, True):
            pts = [t for t in trials if t["pareto"] == on]
            ax.scatter([t[k] for t in pts], [100 * t["accuracy"] for t in pts], s=28,
                       facecolors="C3" if on else "none", edgecolors="C3" if on else "0.5",
                       label="Pareto front" if on else "dominated")
        ax.set_xlabel(k)
        ax.set_xscale("log")
        ax.set_ylabel("test accuracy %")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("EqProp architecture search: Pareto front over accuracy, inference time, memory, FLOPs", fontsize=9)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)
    return path
