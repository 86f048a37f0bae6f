"""Per-prompt P(strong model better than weak) from the prompt embedding, and domains found by
clustering the embeddings. No Ray.

- `fit_predictor(E, y, cfg)`: y = 1 where the strong model scored higher than the weak one on the
  route (`strong_better`). L2-regularised logistic regression (lbfgs, deterministic) or a small MLP
  (seeded, early stopping); fit only on the rows given — the evaluation passes training folds only.
  A training set with one class gives the constant predictor of its base rate (nothing to learn).
  With `prompt_stats` the input is [embedding, features.prompt_stats] (11 columns appended); the
  statistics are standardised with the training rows' mean and standard deviation, kept with the weights.
- `fit_domains(E, cfg)`: KMeans (k-means++, n_init=10, seeded) on the training embeddings; held-out
  prompts are assigned to the nearest centroid. Domains are what the Beta posteriors are kept per.

    pred = fit_predictor(E_train, strong_better(gain_train), PredictorConfig())
    p = pred.predict(E_test)                        # [n] in (0, 1)
    dom = fit_domains(E_train, DomainConfig(n_domains=16))
    d = dom.assign(E_test)                          # [n] ints in 0 .. dom.n_domains - 1
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.common.errors import InputError
from actors.router.config import DomainConfig, PredictorConfig
from actors.router.features import PROMPT_STATS

__all__ = ["Domains", "StrongWinPredictor", "fit_domains", "fit_predictor", "strong_better"]


def strong_better(gain: np.ndarray) -> np.ndarray:
    """Labels: 1 where the strong model's score beat the weak model's (gain > 0), else 0."""
    return (np.asarray(gain, np.float64) > 0).astype(np.int64)


def _check_embeddings(E: np.ndarray, field: str = "embeddings") -> np.ndarray:
    E = np.asarray(E, np.float64)
    if E.ndim != 2 or E.shape[0] == 0:
        raise InputError(field, f"expected a non-empty [n, d] matrix, got shape {E.shape}", "[n >= 1, d]")
    if not np.all(np.isfinite(E)):
        raise InputError(field, "non-finite entries", "finite numbers")
    return E


@dataclass
class StrongWinPredictor:
    """The fitted classifier as arrays, evaluated in numpy (no sklearn at decision time, no pickle on
    disk): `kind` "logistic" (one layer) or "mlp" (ReLU hidden layers, logistic output, as sklearn's
    MLPClassifier computes it); "constant" (no layers) returns the base rate."""

    kind: str
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    base_rate: float
    dim: int                                    # embedding dims (without the prompt statistics)
    stats_mean: np.ndarray | None = None        # [n_stats] training mean of the appended prompt statistics
    stats_scale: np.ndarray | None = None       # [n_stats] their training standard deviation (1 where 0)

    @property
    def n_stats(self) -> int:
        """How many prompt-statistic columns follow the embedding in the input (0: embedding only)."""
        return 0 if self.stats_mean is None else int(self.stats_mean.size)

    def logit(self, E: np.ndarray) -> np.ndarray:
        """The output layer's pre-activation per row (log-odds of strong better); E is [n, dim + n_stats]."""
        E = _check_embeddings(E)
        want = self.dim + self.n_stats
        if E.shape[1] != want:
            extra = f" ({self.dim} embedding + {self.n_stats} prompt statistics)" if self.n_stats else ""
            raise InputError("embeddings", f"{E.shape[1]} dims, the predictor was fitted on {want}{extra}", str(want))
        if not self.weights:
            rate = min(max(self.base_rate, 1e-12), 1 - 1e-12)
            return np.full(E.shape[0], np.log(rate / (1 - rate)))
        h = _standardise(E, self.dim, self.stats_mean, self.stats_scale)
        for W, b in zip(self.weights[:-1], self.biases[:-1]):
            h = np.maximum(h @ W + b, 0.0)
        return (h @ self.weights[-1] + self.biases[-1]).reshape(-1)

    def predict(self, E: np.ndarray) -> np.ndarray:
        """P(strong better) per row of E."""
        if not self.weights:
            _check_embeddings(E)
            return np.full(np.asarray(E).shape[0], self.base_rate)
        z = self.logit(E)
        return np.exp(-np.logaddexp(0.0, -z))       # sigmoid without overflow


def _standardise(X: np.ndarray, dim: int, mean: np.ndarray | None, scale: np.ndarray | None) -> np.ndarray:
    """X with its columns after `dim` (the prompt statistics) standardised; X itself without them."""
    if mean is None:
        return X
    return np.hstack([X[:, :dim], (X[:, dim:] - mean) / scale])


def fit_predictor(E: np.ndarray, y: np.ndarray, cfg: PredictorConfig | None = None) -> StrongWinPredictor:
    """Fit embedding (with `cfg.prompt_stats`: [embedding, prompt_stats]) -> P(strong better) on the
    given (training) rows only."""
    cfg = cfg or PredictorConfig()
    E = _check_embeddings(E)
    y = np.asarray(y)
    if y.shape != (E.shape[0],):
        raise InputError("labels", f"{y.shape} labels for {E.shape[0]} embeddings", "one label per row")
    n_stats = len(PROMPT_STATS) if cfg.prompt_stats else 0
    if E.shape[1] <= n_stats:
        raise InputError("embeddings", f"{E.shape[1]} columns, prompt_stats needs the embedding and {n_stats} "
                         "statistics", f"> {n_stats}")
    dim = E.shape[1] - n_stats
    mean = scale = None
    if n_stats:
        mean = E[:, dim:].mean(axis=0)
        sd = E[:, dim:].std(axis=0)
        scale = np.where(sd > 0, sd, 1.0)
    base = float(y.mean())
    if np.unique(y).size < 2:
        return StrongWinPredictor("constant", [], [], base, dim, mean, scale)
    X = _standardise(E, dim, mean, scale)
    if cfg.kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, solver="lbfgs").fit(X, y)
        return StrongWinPredictor("logistic", [model.coef_.T.astype(np.float64)],
                                  [model.intercept_.astype(np.float64)], base, dim, mean, scale)
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(hidden_layer_sizes=(cfg.hidden,), alpha=cfg.alpha, max_iter=cfg.max_iter,
                          early_stopping=True, validation_fraction=0.1, n_iter_no_change=20,
                          random_state=cfg.seed).fit(X, y)
    return StrongWinPredictor("mlp", [np.asarray(W, np.float64) for W in model.coefs_],
                              [np.asarray(b, np.float64) for b in model.intercepts_], base, dim, mean, scale)


@dataclass
class Domains:
    """KMeans centroids of the training embeddings; a prompt's domain is its nearest centroid."""

    centroids: np.ndarray

    @property
    def n_domains(self) -> int:
        return int(self.centroids.shape[0])

    def assign(self, E: np.ndarray) -> np.ndarray:
        """The nearest centroid (squared Euclidean) of each row."""
        E = _check_embeddings(E)
        if E.shape[1] != self.centroids.shape[1]:
            raise InputError("embeddings", f"{E.shape[1]} dims, the domains were fitted on {self.centroids.shape[1]}",
                             str(self.centroids.shape[1]))
        d2 = (E * E).sum(1)[:, None] - 2 * E @ self.centroids.T + (self.centroids ** 2).sum(1)[None, :]
        return np.argmin(d2, axis=1).astype(np.int64)


def fit_domains(E: np.ndarray, cfg: DomainConfig | None = None) -> Domains:
    """KMeans with min(n_domains, distinct rows) clusters, seeded."""
    from sklearn.cluster import KMeans

    cfg = cfg or DomainConfig()
    E = _check_embeddings(E)
    k = min(cfg.n_domains, np.unique(E, axis=0).shape[0])
    if k == 1:
        return Domains(E.mean(axis=0, keepdims=True))
    km = KMeans(n_clusters=k, n_init=10, random_state=cfg.seed).fit(E)
    return Domains(np.asarray(km.cluster_centers_, np.float64))
