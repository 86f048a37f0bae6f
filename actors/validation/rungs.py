"""One rung of the cascade: the synthetic fit / holdout split, the model kinds (regularised linear,
gradient boosting, a torch MLP), fitting, scoring and cross-validated outputs. No Ray.

`train_rung` and `out_of_fold` are the units of work of the climb (actors/validation/cascade.py): each
is idempotent (seeded from cfg.seed and the rung / fold index), so it returns the same answer in this
process or as a retried Ray task (actors/validation/pool.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.common.budget import checkpoint
from actors.common.errors import InputError
from actors.validation.cascade_config import CascadeConfig, RungSpec

__all__ = ["CascadeData", "MLPModel", "Rung", "fit_model", "out_of_fold", "probabilities", "resolve_device", "score",
           "split_rows", "train_rung"]


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
class CascadeData:
    """Model features (pooled encoding, label left out) and targets, synthetic split into fit / holdout."""

    F_syn: np.ndarray
    y_syn: np.ndarray
    F_real: np.ndarray
    y_real: np.ndarray
    fit: np.ndarray
    holdout: np.ndarray
    n_classes: int   # 0 = regression


def split_rows(n: int, share: float, rng: np.random.Generator, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
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


def sklearn_model(spec: RungSpec, classify: bool, seed: int) -> Any:
    """An unfitted scikit-learn model of a linear or gradient-boosting rung (seeded)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    if spec.kind == "linear":
        return LogisticRegression(C=spec.c, max_iter=5000) if classify else Ridge(alpha=1.0 / spec.c)
    cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
    leaves = None if spec.depth is None else max(2, min(31, 2 ** spec.depth))
    return cls(max_depth=spec.depth, max_leaf_nodes=leaves, max_iter=spec.iterations, learning_rate=0.1,
               early_stopping=False, random_state=seed)


def mlp_net(d_in: int, d_out: int, spec: RungSpec) -> Any:
    """The torch network of an MLP rung (ReLU layers of equal width); also rebuilt to load a checkpoint."""
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
        dev = resolve_device(self.cfg.device)
        rng = np.random.default_rng(self.seed)
        tr, va = split_rows(len(y), self.cfg.mlp_validation, rng, y if self.n_classes else None)
        classify = self.n_classes > 0
        if not classify:   # standardise the target so one learning rate fits every scale
            self.y_mean, self.y_sd = float(y[tr].mean()), float(y[tr].std() or 1.0)
        Xt = torch.as_tensor(X, dtype=torch.float32, device=dev)
        yt = torch.as_tensor(y, dtype=torch.long, device=dev) if classify else \
            torch.as_tensor((y - self.y_mean) / self.y_sd, dtype=torch.float32, device=dev)
        self.net = mlp_net(X.shape[1], self.n_classes if classify else 1, self.spec).to(dev)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.mlp_lr, weight_decay=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss() if classify else torch.nn.MSELoss()
        gen = torch.Generator().manual_seed(self.seed)
        tr_t, va_t = torch.as_tensor(tr), torch.as_tensor(va)
        best, best_state, wait = np.inf, None, 0
        self.epochs = 0
        for _ in range(self.cfg.mlp_epochs):
            checkpoint()   # budget / cancellation of the request training in this process, per epoch
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


def resolve_device(name: str) -> str:
    """"cuda" or "cpu" for a configured device; InputError on `device` when cuda is asked for but not visible."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "CUDA is not visible to this process", "cpu, auto")
    return "cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu"


def fit_model(spec: RungSpec, cfg: CascadeConfig, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Any:
    """A fitted model of the rung's kind (one BLAS / torch thread: rungs run side by side as tasks)."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            if spec.kind == "mlp":
                return MLPModel(spec, cfg, n_classes, seed).fit(X, y)
            return sklearn_model(spec, n_classes > 0, seed).fit(X, y)
    finally:
        torch.set_num_threads(threads)


def probabilities(model: Any, X: np.ndarray, n_classes: int) -> np.ndarray:
    """[n, n_classes] class probabilities, zero for classes the model never saw in training."""
    p = model.predict_proba(X)
    if isinstance(model, MLPModel):
        return p
    out = np.zeros((len(X), n_classes))
    out[:, model.classes_] = p
    return out


def score(model: Any, X: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Accuracy (classification) or R^2 (regression)."""
    pred = model.predict(X)
    if n_classes:
        return float(np.mean(np.asarray(pred) == y))
    ss = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else 0.0


def train_rung(spec: RungSpec, i: int, data: CascadeData, cfg: CascadeConfig) -> tuple[Rung, Any]:
    """Fit rung i on the synthetic fit rows; (metrics, model). Idempotent: the seed is cfg.seed + i."""
    t0 = time.perf_counter()
    model = fit_model(spec, cfg, data.F_syn[data.fit], data.y_syn[data.fit], data.n_classes, cfg.seed + i)
    utility = score(model, data.F_real, data.y_real, data.n_classes)
    learn = score(model, data.F_syn[data.holdout], data.y_syn[data.holdout], data.n_classes)
    epochs = model.epochs if isinstance(model, MLPModel) else None
    return Rung(i, spec.name, utility, learn, round(time.perf_counter() - t0, 4), epochs), model


def out_of_fold(spec: RungSpec, fold: int, data: CascadeData, cfg: CascadeConfig) -> tuple[np.ndarray, np.ndarray]:
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
