"""Cascade trainer: a ladder of models of growing capacity trained on the synthetic table. No Ray needed.

Each rung is fit on most of the synthetic rows and scored twice:
- utility (train-synthetic-test-real): the metric on the whole real table - can a model learned from
  the synthetic data do the real task? (accuracy for a categorical label, R^2 for a numeric one);
- learnability: the same metric on held-out synthetic rows - is there a learnable signal at all?
Capacity grows rung by rung (regularised linear -> gradient boosting of growing depth/iterations ->
MLPs of growing width); the climb stops when utility has not improved for `patience` rungs, because
a synthetic table whose utility plateaus early has nothing more for a bigger model to learn.

After the climb the best rung is cross-validated on the synthetic rows: every synthetic row gets
class probabilities from a model that never saw it, the input confident learning needs
(`cascade_label_issues`, `localize_with_cascade`) - an alternative to localize.py's logistic model.

Every rung is checkpointed atomically under `out_dir` (model file, then a JSON record last; the JSON
carries a key of the config and the data, so stale checkpoints are never reused): a rerun resumes.
Rungs run as Ray tasks when Ray is initialised (a window of `parallel` rungs ahead; results are
consumed in ladder order, so the answer equals the in-process one), else in this process.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from actors.common.errors import InputError
from actors.common.storage import atomic_write_via as _atomic
from actors.validation.config import LocalizerConfig, _Strict, validated
from actors.validation.data import pool
from actors.validation.localize import (
    FlaggedRow,
    Localization,
    _features_without,
    confident_learning,
    localize,
)


class RungSpec(_Strict):
    """One model of the ladder. linear: `c` = inverse regularisation; hgb: `depth` (None = unlimited),
    `iterations`; mlp: `width` of each of `layers` hidden layers."""

    kind: Literal["linear", "hgb", "mlp"]
    c: float = Field(1.0, gt=0, le=1e6)
    depth: int | None = Field(None, ge=1, le=64)
    iterations: int = Field(100, ge=1, le=10_000)
    width: int = Field(32, ge=1, le=8_192)
    layers: int = Field(2, ge=1, le=8)

    @property
    def name(self) -> str:
        if self.kind == "linear":
            return f"linear(C={self.c:g})"
        if self.kind == "hgb":
            return f"hgb(depth={self.depth if self.depth else 'inf'},iter={self.iterations})"
        return f"mlp({self.layers}x{self.width})"


def default_ladder() -> tuple[RungSpec, ...]:
    """18 rungs: 3 linear (less and less regularised), 7 gradient boosting, 8 MLPs (width 8 .. 1024)."""
    lin = [RungSpec(kind="linear", c=c) for c in (0.01, 0.1, 1.0)]
    hgb = [RungSpec(kind="hgb", depth=d, iterations=i)
           for d, i in ((1, 25), (2, 50), (2, 100), (3, 100), (4, 200), (6, 200), (None, 300))]
    mlp = [RungSpec(kind="mlp", width=w) for w in (8, 16, 32, 64, 128, 256, 512, 1024)]
    return tuple(lin + hgb + mlp)


class CascadeConfig(_Strict):
    """The ladder, the early stopping of the climb and of each MLP, splits and seeds."""

    rungs: tuple[RungSpec, ...] = Field(default_factory=default_ladder, min_length=1, max_length=200)
    task: Literal["auto", "classification", "regression"] = "auto"   # auto: categorical label -> classes
    patience: int = Field(4, ge=1, le=200)             # rungs without utility gain before the climb stops
    min_improvement: float = Field(0.0, ge=0, le=1)    # a gain must exceed this to count
    holdout: float = Field(0.25, gt=0, lt=0.9)         # synthetic rows held out (learnability)
    cv_folds: int = Field(5, ge=2, le=20)              # folds for the out-of-sample probabilities
    oof_with_real: bool = True                         # out-of-fold models also fit on the real rows
    mlp_epochs: int = Field(200, ge=1, le=100_000)
    mlp_patience: int = Field(10, ge=1, le=10_000)     # epochs without validation-loss gain
    mlp_batch: int = Field(128, ge=1, le=1_000_000)
    mlp_lr: float = Field(1e-3, gt=0, le=1)
    mlp_validation: float = Field(0.15, gt=0, lt=0.9)  # share of the training rows for MLP early stopping
    parallel: int = Field(2, ge=1, le=1_024)           # rungs in flight as Ray tasks
    num_cpus: float = Field(1.0, gt=0)                 # per Ray task
    num_gpus: float = Field(0, ge=0)                   # per Ray task of an MLP rung (or its folds)
    device: Literal["cpu", "cuda", "auto"] = "cpu"     # where MLPs train; auto = cuda when visible
    seed: int = Field(0, ge=0)


@dataclass
class Rung:
    """Metrics of one finished rung (what the checkpoint JSON holds)."""

    rung: int
    model: str
    utility: float
    learnability: float
    seconds: float
    epochs: int | None = None


@dataclass
class CascadeResult:
    """Per-rung metrics, the best rung, out-of-sample outputs for every synthetic row, why it stopped."""

    task: str
    metric: str
    rungs: list[Rung]
    best: int                      # ladder index of the rung with the highest utility
    oof: np.ndarray                # [n_synth, K] class probabilities (classification) or [n_synth] predictions
    classes: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None   # [n_synth] class ids of the synthetic labels (classification)
    stopped_early: bool = False
    resumed: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"task": self.task, "metric": self.metric, "best": self.best, "stopped_early": self.stopped_early,
                "resumed": self.resumed, "rungs": [asdict(r) for r in self.rungs], "classes": self.classes}


@dataclass
class _Data:
    """Model features (pooled encoding, label left out) and targets, synthetic split into fit / holdout."""

    F_syn: np.ndarray
    y_syn: np.ndarray
    F_real: np.ndarray
    y_real: np.ndarray
    fit: np.ndarray
    holdout: np.ndarray
    n_classes: int   # 0 = regression


# ---------------------------------------------------------------- data

def prepare(real: pd.DataFrame, synth: pd.DataFrame, label: str, cfg: CascadeConfig,
            categorical: list[str] | tuple[str, ...] | None = None) -> tuple[_Data, str, list[str]]:
    """Features / targets for both tables; (data, task, class names)."""
    for name, df in (("real", real), ("synthetic", synth)):
        if label not in df.columns:
            raise InputError("label", f"{label!r} is not a column of the {name} table", ", ".join(map(str, df.columns)))
        if df[label].isna().any():
            raise InputError(f"{name}.{label}", "the label has missing values", "no missing labels")
    pooled = pool(real, synth, categorical=categorical)
    F = _features_without(pooled, label)
    R, S = ~pooled.is_synth, pooled.is_synth
    task = cfg.task
    if task == "auto":
        task = "classification" if label in pooled.categorical else "regression"
    classes: list[str] = []
    if task == "classification":
        cat = pd.Categorical(pd.concat([real[label], synth[label]], ignore_index=True).astype(str))
        codes, classes = cat.codes.astype(np.int64), [str(c) for c in cat.categories]
        y_real, y_syn = codes[: len(real)], codes[len(real):]
        if len(np.unique(y_syn)) < 2:
            raise InputError(f"synthetic.{label}", "the synthetic label has a single class", ">= 2 classes")
    else:
        if label in pooled.categorical:
            raise InputError("task", f"regression needs a numeric label; {label!r} is categorical", "classification")
        y_real, y_syn = real[label].to_numpy(float), synth[label].to_numpy(float)
    rng = np.random.default_rng(cfg.seed)
    fit, hold = _split(len(y_syn), cfg.holdout, rng, y_syn if classes else None)
    return _Data(F[S], y_syn, F[R], y_real, fit, hold, len(classes)), task, classes


def _split(n: int, share: float, rng: np.random.Generator, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) row indices; stratified by class so both sides see every class."""
    held = []
    groups = [np.flatnonzero(y == k) for k in np.unique(y)] if y is not None else [np.arange(n)]
    for g in groups:
        g = rng.permutation(g)
        held.append(g[: int(round(share * len(g)))])
    hold = np.sort(np.concatenate(held))
    if len(hold) == 0 or len(hold) == n:
        raise InputError("holdout", f"{share} of {n} synthetic rows leaves an empty side", f"between 1/{n} and 1 - 1/{n}")
    return np.setdiff1d(np.arange(n), hold), hold


# ---------------------------------------------------------------- models

def _sklearn_model(spec: RungSpec, classify: bool, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    if spec.kind == "linear":
        return LogisticRegression(C=spec.c, max_iter=5000) if classify else Ridge(alpha=1.0 / spec.c)
    cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
    leaves = None if spec.depth is None else max(2, min(31, 2 ** spec.depth))
    return cls(max_depth=spec.depth, max_leaf_nodes=leaves, max_iter=spec.iterations, learning_rate=0.1,
               early_stopping=False, random_state=seed)


def _mlp(d_in: int, d_out: int, spec: RungSpec):
    import torch.nn as nn

    layers, width = [], d_in
    for _ in range(spec.layers):
        layers += [nn.Linear(width, spec.width), nn.ReLU()]
        width = spec.width
    return nn.Sequential(*layers, nn.Linear(width, d_out))


class MLPModel:
    """A torch MLP with an sklearn-like face; early-stops on a validation split, keeps the best weights."""

    def __init__(self, spec: RungSpec, cfg: CascadeConfig, n_classes: int, seed: int):
        self.spec, self.cfg, self.n_classes, self.seed = spec, cfg, n_classes, seed
        self.net = None
        self.epochs = 0
        self.y_mean, self.y_sd = 0.0, 1.0

    def fit(self, X: np.ndarray, y: np.ndarray) -> MLPModel:
        import torch

        torch.manual_seed(self.seed)
        dev = _device(self.cfg.device)
        rng = np.random.default_rng(self.seed)
        tr, va = _split(len(y), self.cfg.mlp_validation, rng, y if self.n_classes else None)
        classify = self.n_classes > 0
        if not classify:   # standardise the target so one learning rate fits every scale
            self.y_mean, self.y_sd = float(y[tr].mean()), float(y[tr].std() or 1.0)
        Xt = torch.as_tensor(X, dtype=torch.float32, device=dev)
        yt = torch.as_tensor(y, dtype=torch.long, device=dev) if classify else \
            torch.as_tensor((y - self.y_mean) / self.y_sd, dtype=torch.float32, device=dev)
        self.net = _mlp(X.shape[1], self.n_classes if classify else 1, self.spec).to(dev)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.mlp_lr, weight_decay=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss() if classify else torch.nn.MSELoss()
        gen = torch.Generator().manual_seed(self.seed)
        tr_t, va_t = torch.as_tensor(tr), torch.as_tensor(va)
        best, best_state, wait = np.inf, None, 0
        self.epochs = 0
        for _ in range(self.cfg.mlp_epochs):
            self.epochs += 1
            self.net.train()
            for b in tr_t[torch.randperm(len(tr_t), generator=gen)].split(self.cfg.mlp_batch):
                b = b.to(dev)
                opt.zero_grad()
                loss_fn(self._out(Xt[b]), yt[b]).backward()
                opt.step()
            self.net.eval()
            with torch.no_grad():
                val = float(loss_fn(self._out(Xt[va_t.to(dev)]), yt[va_t.to(dev)]))
            if val < best - 1e-6:
                best, wait = val, 0
                best_state = {k: v.clone() for k, v in self.net.state_dict().items()}
            else:
                wait += 1
                if wait >= self.cfg.mlp_patience:
                    break
        self.net.load_state_dict(best_state)
        self.net.cpu()   # predictions, checkpoints and Ray results stay on the CPU (the driver may have no GPU)
        return self

    def _out(self, X):
        out = self.net(X)
        return out if self.n_classes else out[:, 0]

    def _forward(self, X: np.ndarray) -> np.ndarray:
        import torch

        self.net.eval()
        with torch.no_grad():
            out = self._out(torch.as_tensor(X, dtype=torch.float32))
            return (torch.softmax(out, dim=1) if self.n_classes else out).double().numpy()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._forward(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self._forward(X)
        return out.argmax(axis=1) if self.n_classes else out * self.y_sd + self.y_mean


def _device(name: str) -> str:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "CUDA is not visible to this process", "cpu, auto")
    return "cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu"


def fit_model(spec: RungSpec, cfg: CascadeConfig, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int):
    """A fitted model of the rung's kind (one BLAS / torch thread: rungs run side by side as tasks)."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            if spec.kind == "mlp":
                return MLPModel(spec, cfg, n_classes, seed).fit(X, y)
            return _sklearn_model(spec, n_classes > 0, seed).fit(X, y)
    finally:
        torch.set_num_threads(threads)


def probabilities(model, X: np.ndarray, n_classes: int) -> np.ndarray:
    """[n, n_classes] class probabilities, zero for classes the model never saw in training."""
    p = model.predict_proba(X)
    if isinstance(model, MLPModel):
        return p
    out = np.zeros((len(X), n_classes))
    out[:, model.classes_] = p
    return out


def score(model, X: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Accuracy (classification) or R^2 (regression)."""
    pred = model.predict(X)
    if n_classes:
        return float(np.mean(np.asarray(pred) == y))
    ss = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else 0.0


def train_rung(spec: RungSpec, i: int, data: _Data, cfg: CascadeConfig) -> tuple[Rung, Any]:
    """Fit rung i on the synthetic fit rows; (metrics, model). Idempotent: the seed is cfg.seed + i."""
    t0 = time.perf_counter()
    model = fit_model(spec, cfg, data.F_syn[data.fit], data.y_syn[data.fit], data.n_classes, cfg.seed + i)
    utility = score(model, data.F_real, data.y_real, data.n_classes)
    learn = score(model, data.F_syn[data.holdout], data.y_syn[data.holdout], data.n_classes)
    epochs = model.epochs if isinstance(model, MLPModel) else None
    return Rung(i, spec.name, utility, learn, round(time.perf_counter() - t0, 4), epochs), model


def out_of_fold(spec: RungSpec, fold: int, data: _Data, cfg: CascadeConfig) -> tuple[np.ndarray, np.ndarray]:
    """(test rows, outputs) of one cross-validation fold over all synthetic rows."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(data.y_syn)
    if data.n_classes and np.bincount(data.y_syn).min(initial=cfg.cv_folds) >= cfg.cv_folds:
        splits = StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed).split(np.zeros(n), data.y_syn)
    else:
        splits = KFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed).split(np.zeros(n))
    train, test = list(splits)[fold]
    X, y = data.F_syn[train], data.y_syn[train]
    if cfg.oof_with_real:   # the real rows anchor the model: noisy synthetic labels then mislead it less
        X, y = np.vstack([data.F_real, X]), np.r_[data.y_real, y]
    model = fit_model(spec, cfg, X, y, data.n_classes, cfg.seed + 1000 + fold)
    if data.n_classes:
        return test, probabilities(model, data.F_syn[test], data.n_classes)
    return test, np.asarray(model.predict(data.F_syn[test]), dtype=float)


# ---------------------------------------------------------------- checkpoints



def _json(path: Path, obj: dict) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1)))


def run_key(data: _Data, cfg: CascadeConfig, task: str) -> str:
    """Hash of the data and every setting a rung depends on (the ladder itself is keyed per rung)."""
    h = hashlib.sha256()
    for a in (data.F_syn, data.y_syn, data.F_real, data.y_real, data.fit):
        h.update(np.ascontiguousarray(a).tobytes())
    skip = {"rungs", "patience", "min_improvement", "parallel", "num_cpus", "num_gpus"}
    h.update(cfg.model_dump_json(exclude=skip).encode())
    h.update(task.encode())
    return h.hexdigest()[:16]


def save_rung(out_dir: Path, key: str, spec: RungSpec, rung: Rung, model: Any) -> None:
    """Model file first (torch.save / joblib), the JSON record last: its presence means 'finished'."""
    import joblib
    import torch

    stem = out_dir / f"rung_{rung.rung:02d}"
    if isinstance(model, MLPModel):
        state = {"state_dict": model.net.state_dict(), "y_mean": model.y_mean, "y_sd": model.y_sd}
        _atomic(stem.with_suffix(".pt"), lambda tmp: torch.save(state, tmp))
    else:
        _atomic(stem.with_suffix(".joblib"), lambda tmp: joblib.dump(model, tmp))
    _json(stem.with_suffix(".json"), {"key": key, "spec": spec.model_dump(), **asdict(rung)})


def load_rung(out_dir: Path, key: str, i: int, spec: RungSpec) -> Rung | None:
    """The finished rung's metrics if its checkpoint matches this data, settings and spec."""
    path = out_dir / f"rung_{i:02d}.json"
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    if rec.pop("key") != key or rec.pop("spec") != spec.model_dump():
        return None
    return Rung(**rec)


def load_model(out_dir: str | Path, i: int, spec: RungSpec, cfg: CascadeConfig, d_in: int, n_classes: int):
    """A checkpointed rung's model, ready to predict (sklearn via joblib, MLPs via torch.load)."""
    import joblib
    import torch

    stem = Path(out_dir) / f"rung_{i:02d}"
    if spec.kind != "mlp":
        return joblib.load(stem.with_suffix(".joblib"))
    state = torch.load(stem.with_suffix(".pt"), map_location="cpu")
    model = MLPModel(spec, cfg, n_classes, cfg.seed + i)
    model.net = _mlp(d_in, n_classes if n_classes else 1, spec)
    model.net.load_state_dict(state["state_dict"])
    model.y_mean, model.y_sd = state["y_mean"], state["y_sd"]
    return model


# ---------------------------------------------------------------- the climb

def _ray_up() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def _runner(cfg: CascadeConfig, data: _Data) -> Callable[..., Callable[[], Any]]:
    """submit(fn, spec, *args) -> a zero-argument 'get' of fn(spec, *args, data, cfg): a Ray task when
    Ray is up (the data go to the object store once; MLP rungs ask for `num_gpus`), else a deferred
    call in this process."""
    try:
        import ray
    except ImportError:   # the engine works without Ray
        ray = None
    if ray is None or not ray.is_initialized():
        return lambda fn, spec, *args: (lambda: fn(spec, *args, data, cfg))
    data_ref = ray.put(data)

    def submit(fn, spec: RungSpec, *args):
        gpus = cfg.num_gpus if spec.kind == "mlp" else 0
        ref = ray.remote(num_cpus=cfg.num_cpus, num_gpus=gpus, max_retries=2)(fn).remote(spec, *args, data_ref, cfg)
        return lambda: ray.get(ref)
    return submit


def climb(real: pd.DataFrame, synth: pd.DataFrame, label: str, config: CascadeConfig | dict | None = None, *,
          out_dir: str | Path | None = None, categorical: list[str] | tuple[str, ...] | None = None,
          **overrides: Any) -> Iterator[dict]:
    """Generator of progress events {rung, model, status, utility, learnability, seconds}; the last
    event has status 'finished' and carries the CascadeResult under 'result'."""
    cfg = validated(CascadeConfig, config, **overrides)
    if cfg.patience > len(cfg.rungs):
        raise InputError("patience", f"{cfg.patience} rungs of patience on a ladder of {len(cfg.rungs)}",
                         f"<= {len(cfg.rungs)}")
    if cfg.device == "cuda" and not (cfg.num_gpus > 0 and _ray_up()):
        _device("cuda")   # fail here, naming the field, not inside a task (MLP rungs would train here)
    data, task, classes = prepare(real, synth, label, cfg, categorical)
    out = Path(out_dir) if out_dir is not None else None
    key = run_key(data, cfg, task)
    submit = _runner(cfg, data)
    pending: dict[int, Callable[[], Any]] = {}
    nxt = 0

    def top_up() -> None:   # keep `parallel` unfinished rungs in flight (speculatively, past a later stop)
        nonlocal nxt
        while nxt < len(cfg.rungs) and len(pending) < cfg.parallel:
            if out is None or load_rung(out, key, nxt, cfg.rungs[nxt]) is None:
                pending[nxt] = submit(train_rung, cfg.rungs[nxt], nxt)
            nxt += 1

    rungs: list[Rung] = []
    resumed: list[int] = []
    best, since, stopped = -1, 0, False
    for i, spec in enumerate(cfg.rungs):
        top_up()
        yield {"rung": i, "model": spec.name, "status": "started", "utility": None, "learnability": None,
               "seconds": None}
        if i in pending:
            rung, model = pending.pop(i)()
            if out is not None:
                save_rung(out, key, spec, rung, model)
            status = "done"
        else:
            rung, status = load_rung(out, key, i, spec), "resumed"
            resumed.append(i)
        rungs.append(rung)
        yield {"rung": i, "model": spec.name, "status": status, "utility": rung.utility,
               "learnability": rung.learnability, "seconds": rung.seconds}
        if best < 0 or rung.utility > rungs[best].utility + cfg.min_improvement:
            best, since = i, 0
        else:
            since += 1
        if since >= cfg.patience and i + 1 < len(cfg.rungs):
            stopped = True
            break
    pending.clear()   # speculative rungs past the stop: their results are not used
    if stopped:
        for j in range(len(rungs), len(cfg.rungs)):
            yield {"rung": j, "model": cfg.rungs[j].name, "status": "skipped", "utility": None,
                   "learnability": None, "seconds": None}
    oof = yield from _out_of_fold(cfg, data, best, out, key, submit)
    result = CascadeResult(task, "accuracy" if classes else "r2", rungs, best, oof, classes,
                           data.y_syn if classes else None, stopped, resumed)
    if out is not None:
        _json(out / "cascade.json", result.to_json())
    yield {"rung": best, "model": cfg.rungs[best].name, "status": "finished", "utility": rungs[best].utility,
           "learnability": rungs[best].learnability, "seconds": sum(r.seconds for r in rungs), "result": result}


def _out_of_fold(cfg: CascadeConfig, data: _Data, best: int, out: Path | None, key: str,
                 submit: Callable) -> Iterator[dict]:
    """Cross-validated outputs of the best rung for every synthetic row (checkpointed as oof.npz)."""
    path = out / "oof.npz" if out is not None else None
    tag = f"{key}:{best}:{cfg.rungs[best].model_dump_json()}"
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as z:
            if str(z["tag"]) == tag:
                return z["oof"].copy()
    spec = cfg.rungs[best]
    t0 = time.perf_counter()
    gets = [submit(out_of_fold, spec, f) for f in range(cfg.cv_folds)]
    n = len(data.y_syn)
    oof = np.zeros((n, data.n_classes)) if data.n_classes else np.zeros(n)
    for get in gets:
        test, values = get()
        oof[test] = values
    if path is not None:
        _atomic(path, lambda tmp: _savez(tmp, oof=oof, tag=np.array(tag)))
    yield {"rung": best, "model": spec.name, "status": "out_of_fold", "utility": None, "learnability": None,
           "seconds": round(time.perf_counter() - t0, 4)}
    return oof


def _savez(tmp: str, **arrays: np.ndarray) -> None:
    with open(tmp, "wb") as f:   # a file object: np.savez would append '.npz' to a bare name
        np.savez(f, **arrays)


def train_cascade(real: pd.DataFrame, synth: pd.DataFrame, label: str, config: CascadeConfig | dict | None = None,
                  *, out_dir: str | Path | None = None, on_event: Callable[[dict], None] | None = None,
                  categorical: list[str] | tuple[str, ...] | None = None, **overrides: Any) -> CascadeResult:
    """Climb the ladder to the end (or the early stop); `on_event` sees every progress event."""
    for event in climb(real, synth, label, config, out_dir=out_dir, categorical=categorical, **overrides):
        if event["status"] == "finished":
            return event["result"]
        if on_event is not None:
            on_event(event)
    raise RuntimeError("the cascade ended without a result")   # unreachable: climb always finishes


# ---------------------------------------------------------------- confident learning on cascade probabilities

def cascade_label_issues(result: CascadeResult) -> tuple[np.ndarray, np.ndarray, list[str], dict[int, str]]:
    """(score = 1 - p(given label), issue mask, reasons, {row: confident class}) by localize's confident
    learning, on the cascade's out-of-sample probabilities instead of localize's logistic model."""
    if result.labels is None:
        raise InputError("task", "label issues need a classification cascade", "classification")
    probs, labels, classes = result.oof, result.labels, result.classes
    issues, confident, _ = confident_learning(probs, labels)
    given = probs[np.arange(len(labels)), labels]
    model = result.rungs[result.best].model
    reasons = [f"label issue: labelled {classes[lab]!r} but the cascade's {model} says {classes[c]!r} "
               f"(p={probs[i, c]:.2f}, p(given)={given[i]:.2f})" if c >= 0 else
               f"label: labelled {classes[lab]!r}, p(given)={given[i]:.2f}"
               for i, (lab, c) in enumerate(zip(labels, confident))]
    return 1 - given, issues, reasons, {int(i): classes[confident[i]] for i in np.flatnonzero(issues)}


def localize_with_cascade(real: pd.DataFrame, synth: pd.DataFrame, result: CascadeResult, config=None, *,
                          categorical: list[str] | tuple[str, ...] | None = None, **overrides: Any) -> Localization:
    """localize() for memorised rows and outliers, with label issues from the cascade's probabilities."""
    loc = localize(real, synth, config, label=None, categorical=categorical, **overrides)
    score, issues, reasons, suggestions = cascade_label_issues(result)
    loc.scores["label_issue"], loc.flagged["label_issue"] = score, np.flatnonzero(issues)
    rows = {r.index: r for r in loc.rows}
    for i in np.flatnonzero(issues):
        row = FlaggedRow(int(i), float(score[i]), reasons[i], "label_issue")
        if int(i) in rows:
            old = rows[int(i)]
            top = row if row.score > old.score else old
            row = FlaggedRow(top.index, top.score, f"{old.reason}; {row.reason}", f"{old.kind},label_issue")
        rows[int(i)] = row
    limit = validated(LocalizerConfig, config, **overrides).max_rows
    loc.rows = sorted(rows.values(), key=lambda r: (-r.score, r.index))[:limit]
    loc.suggested_labels = suggestions
    return loc
