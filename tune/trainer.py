"""Ray Tune over the trainer: ASHA (early stopping) or PBT (exploit/explore through checkpoints).

    from tune.trainer import TrainSearchSpec, search
    result = search(TrainSearchSpec.model_validate(yaml_dict), data_dir, out_dir)

Ray Train V2 style: the Tune trainable is a *driver function* (`driver_fn(config)`) that builds the
trial's TrainSpec from the base spec and the sampled values (dotted keys, e.g. `optimizer.lr`,
`model.cfg.d_model`) and runs the trainer:

- `asha`: one training run per trial, each `ray.train.report` (every `train.report_every` steps) is one
  Tune iteration; ASHAScheduler(grace_period, reduction_factor) stops the weak trials at its rungs
  (iterations = reports). The TorchTrainer's reports reach Tune through Ray's TuneReportCallback.
- `pbt`: the trial trains in rounds of `perturbation_interval` reports; each round resumes from the
  trial's Tune checkpoint (`tune.get_checkpoint()`: its own last round, or after an exploit the
  donor's) with the trainer's exact resume and reports the new checkpoint. PBT mutates only
  optimizer / schedule values (a donor's checkpoint must be of the same model and data order).

`inline: true` runs each trial's training in the trial process itself (one rank, no TorchTrainer):
tiny CPU searches start in seconds instead of a worker group per trial. The searcher is Tune's
seeded random search (BasicVariantGenerator(random_state=seed)).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from actors.common.config import Strict, apply_overrides
from actors.common.errors import InputError, from_validation
from actors.common.storage import atomic_write_json
from actors.trainer.config import TrainSpec

__all__ = ["Dim", "TrainSearchSpec", "driver_fn", "load_search_spec", "search", "trial_spec"]

_IDENTITY = ("batch_size", "seed", "shuffle", "steps")   # PBT must keep the data order and schedule length


class Dim(Strict):
    """One searched value: choice(values) (sampled), grid(values) (every value, times num_samples),
    uniform / loguniform(low, high), randint(low, high) (high excluded)."""

    type: Literal["choice", "grid", "uniform", "loguniform", "randint"]
    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _shape(self) -> Dim:
        if self.type in ("choice", "grid"):
            if not self.values:
                raise InputError("values", f"a {self.type} needs a non-empty list of values", "values: [a, b, ...]")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise InputError("low", f"{self.type} needs low < high, got {self.low}, {self.high}", "low < high")
        elif self.type == "loguniform" and self.low <= 0:
            raise InputError("low", f"loguniform needs low > 0, got {self.low}", "> 0")
        return self

    def samples(self) -> list[Any]:
        """Values that must all be valid for the base spec (checked up front)."""
        if self.type in ("choice", "grid"):
            return list(self.values)
        if self.type == "randint":
            return [int(self.low), int(self.high) - 1]
        return [self.low, self.high]

    def to_tune(self) -> Any:
        from ray import tune

        if self.type == "choice":
            return tune.choice(self.values)
        if self.type == "grid":
            return tune.grid_search(self.values)
        if self.type == "randint":
            return tune.randint(int(self.low), int(self.high))
        return (tune.loguniform if self.type == "loguniform" else tune.uniform)(self.low, self.high)


class TrainSearchSpec(Strict):
    name: str = Field("train-search", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    train: TrainSpec
    space: dict[str, Dim] = Field(min_length=1)
    scheduler: Literal["asha", "pbt"] = "asha"
    num_samples: int = Field(4, ge=1, le=10_000)
    metric: str = "loss"
    mode: Literal["min", "max"] = "min"
    grace_period: int = Field(10, ge=1, le=1_000_000)           # ASHA: reports before the first rung
    reduction_factor: int = Field(3, ge=2, le=100)               # ASHA
    perturbation_interval: int = Field(10, ge=1, le=1_000_000)  # PBT: a round = this many report_every steps
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)          # PBT: bottom fraction that exploits the top
    synch: bool = False                                          # PBT: perturb all trials at once (deterministic)
    max_concurrent_trials: int = Field(2, ge=1, le=1024)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    inline: bool = False                                         # train inside the trial process (1 rank)

    @model_validator(mode="after")
    def _space(self) -> TrainSearchSpec:
        base = self.train.model_dump(mode="json")
        for key, dim in self.space.items():
            for value in dim.samples():
                trial_spec(base, {key: value}, field=f"space.{key}")
            if self.scheduler == "pbt" and (key.startswith("model.") or key.split(".")[0] in _IDENTITY
                                            or key.startswith("workers.") or key == "strategy"):
                raise InputError(f"space.{key}", "PBT copies checkpoints between trials, so it can only mutate "
                                 "optimizer and scheduler values", "optimizer.* or scheduler.* keys")
        return self


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_search_spec(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainSearchSpec:
    """A search YAML; `train_preset: <name>.yaml` takes the train spec from configs/train/<name>.yaml (or a
    path), with the YAML's own `train:` mapping merged over it. Dotted `overrides` as jobs.cli.load_spec
    (e.g. {"num_samples": 8, "train.steps": 100}). Errors are InputErrors naming the field."""
    from pydantic import ValidationError

    from actors.common.config import load_yaml

    def read(p: Path, field: str) -> dict[str, Any]:
        if not p.is_file():
            raise InputError(field, f"no such file {str(p)!r}", "a readable YAML file")
        raw = load_yaml(p.read_text()) or {}
        if not isinstance(raw, dict):
            raise InputError(field, f"{p} holds a {type(raw).__name__}, not a mapping", "a YAML mapping")
        return raw

    raw = read(Path(path), "--config") if path is not None else {}
    name = raw.pop("train_preset", None)
    if name is not None:
        from configs import preset

        p = Path(name) if Path(name).is_file() else preset("train", str(name))
        raw["train"] = _merge(read(p, "train_preset"), raw.get("train") or {})
    apply_overrides(raw, overrides)
    try:
        return TrainSearchSpec.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(exc) from None


def trial_spec(base: dict[str, Any], values: dict[str, Any], *, field: str = "space") -> TrainSpec:
    """The base TrainSpec with dotted `values` set (a key that is not a field, or a bad value, names `field`)."""
    from pydantic import ValidationError

    data = json.loads(json.dumps(base))
    for key, value in values.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node, dict):
                raise InputError(field, f"{key!r} is not a path of the train spec", "dotted TrainSpec keys")
            node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise InputError(field, f"{key!r} is not a path of the train spec", "dotted TrainSpec keys")
        node[leaf] = value
    try:
        return TrainSpec.model_validate(data)
    except ValidationError as exc:
        inner = from_validation(exc)
        raise InputError(field, f"train.{inner.field}: {inner.message}", inner.allowed) from None


def driver_fn(config: dict[str, Any], *, search: dict[str, Any], data: str, trial_root: str) -> None:
    """The Tune trainable (a Ray Train V2 driver function): one trial's training, reporting to Tune."""
    from ray import tune

    spec_s = TrainSearchSpec.model_validate(search)
    spec = trial_spec(spec_s.train.model_dump(mode="json"), config)
    root = Path(trial_root) / tune.get_context().get_trial_id()
    root.mkdir(parents=True, exist_ok=True)
    if spec_s.scheduler == "asha":
        _run_streaming(spec, spec_s, data, root)
    else:
        _run_rounds(spec, spec_s, data, root)


def _metrics(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if isinstance(v, (int, float))}


def _run_streaming(spec: TrainSpec, s: TrainSearchSpec, data: str, root: Path) -> None:
    from ray import tune

    if s.inline:
        from actors.trainer.engine import train

        train(spec, data, root / "run", report=lambda m, _ckpt: tune.report(_metrics(m)), prune=True, log=None)
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    from actors.trainer.pool import run_training

    run_training(spec, data, root, callbacks=[TuneReportCallback()])


def _run_rounds(spec: TrainSpec, s: TrainSearchSpec, data: str, root: Path) -> None:
    """PBT: rounds of perturbation_interval reports, each resumed from the trial's Tune checkpoint."""
    from ray import tune

    from actors.trainer import checkpoint as ck

    round_steps = s.perturbation_interval * spec.report_every
    restored = tune.get_checkpoint()
    resume = None
    if restored is not None:
        resume = restored.to_directory(str(root / f"restored-{time.time_ns()}"))
    step = int(ck.read_meta(Path(resume))["step"]) if resume else 0
    _log_round(root, {"event": "start", "step": step, "restored": resume is not None,
                      "from": ck.read_meta(Path(resume))["spec"]["optimizer"]["lr"] if resume else None,
                      "lr": spec.optimizer.lr})
    while step < spec.steps:
        until = min(spec.steps, step + round_steps)
        round_dir = root / f"round-{until:09d}-{time.time_ns()}"
        last = _train_round(spec, s, data, round_dir, resume, until)   # the engine checkpoints at `until`
        latest = ck.latest_checkpoint(round_dir / "checkpoints")
        tune.report(_metrics(last), checkpoint=tune.Checkpoint.from_directory(str(latest)))
        resume, step = str(latest), until


def _log_round(root: Path, row: dict[str, Any]) -> None:
    """<trial>/rounds.jsonl: each (re)start of the trial — after a PBT exploit `restored` is true and
    `from` is the learning rate the donor's checkpoint was trained with."""
    with open(root / "rounds.jsonl", "a") as fh:
        fh.write(json.dumps({**row, "time": time.time()}) + "\n")


def _train_round(spec: TrainSpec, s: TrainSearchSpec, data: str, run_dir: Path, resume: str | None,
                 until: int) -> dict[str, Any]:
    if s.inline:
        from actors.trainer.engine import train

        return train(spec, data, run_dir, resume_from=resume, until_step=until, log=None)["final"]
    from actors.trainer.engine import read_metrics
    from actors.trainer.pool import make_trainer

    run_dir.mkdir(parents=True)
    make_trainer(spec, Path(data), run_dir, resume_from=resume, until_step=until).fit()
    return read_metrics(run_dir)[-1]


def search(spec: TrainSearchSpec, data: str | Path, out: str | Path) -> dict[str, Any]:
    """Run the search; writes <out>/search.json (best config, every trial's last metrics) and returns it."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining
    from ray.tune.search import BasicVariantGenerator

    from actors.trainer.shards import ShardDataset

    data = str(Path(data).resolve())
    ShardDataset(data)   # a bad data directory fails before any trial
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    reports = spec.train.steps // spec.train.report_every
    if spec.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(reports, spec.grace_period),
                                  grace_period=spec.grace_period, reduction_factor=spec.reduction_factor)
        space = {k: d.to_tune() for k, d in spec.space.items()}
    else:
        if any(d.type == "grid" for d in spec.space.values()):
            raise InputError("space", "PBT mutates values by resampling; a grid cannot be resampled",
                             "choice, uniform, loguniform or randint")
        mutations = {k: d.to_tune() for k, d in spec.space.items()}
        # one Tune result per round of perturbation_interval * report_every steps: PBT counts global steps
        scheduler = PopulationBasedTraining(time_attr="step",
                                            perturbation_interval=spec.perturbation_interval * spec.train.report_every,
                                            hyperparam_mutations=mutations, quantile_fraction=spec.quantile_fraction,
                                            synch=spec.synch)
        space = dict(mutations)
    trial_root = out / "trials"
    trainable = tune.with_parameters(driver_fn, search=spec.model_dump(mode="json"), data=data,
                                     trial_root=str(trial_root))
    cpus = spec.train.workers.num_cpus if spec.inline else 0.01   # a TorchTrainer's workers hold the CPUs
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus}), param_space=space,
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler, num_samples=spec.num_samples,
                                    search_alg=BasicVariantGenerator(random_state=spec.seed,
                                                                     max_concurrent=spec.max_concurrent_trials),
                                    reuse_actors=True),   # PBT restarts and new trials skip a process start
        run_config=tune.RunConfig(name=spec.name, storage_path=str(out / "tune"), verbose=0))
    t0 = time.perf_counter()
    grid = tuner.fit()
    trials = []
    for r in grid:
        m = r.metrics or {}
        trials.append({"config": {k: r.config.get(k) for k in spec.space}, "iterations": m.get("training_iteration"),
                       "step": m.get("step"), spec.metric: m.get(spec.metric),
                       "error": str(r.error) if r.error else None, "path": r.path})
    done = [t for t in trials if t[spec.metric] is not None and t["error"] is None]
    if not done:
        raise RuntimeError(f"no trial of {spec.name} finished: {[t['error'] for t in trials]}")
    best = (min if spec.mode == "min" else max)(done, key=lambda t: t[spec.metric])
    result = {"name": spec.name, "scheduler": spec.scheduler, "n_trials": len(trials), "best": best,
              "trials": trials, "wall_s": time.perf_counter() - t0}
    atomic_write_json(out / "search.json", result)
    return result
