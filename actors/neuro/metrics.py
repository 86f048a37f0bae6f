"""Scores against the ground truth: rate R^2, Poisson NLL, co-bps (NLB), linear-probe latent R^2.

Conventions: arrays are [trials, bins, channels]; `expected` are expected counts per bin (rate * bin
width), never Hz. R^2 is computed per column over every (trial, bin) sample and averaged over columns
(sklearn's `multioutput="uniform_average"`). co-bps is NLB's bits per spike:
(NLL_null - NLL_model) / total spikes / ln 2 with the null = each neuron's mean count per bin over the
evaluated trials; the lgamma(y+1) terms cancel but are kept so the NLLs are true NLLs.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

__all__ = ["bits_per_spike", "fit_poisson_glm", "fit_ridge", "flat", "poisson_nll", "predict_poisson_glm", "predict_ridge", "probe_r2", "r2"]

EPS = 1e-9


def flat(x: np.ndarray) -> np.ndarray:
    """[..., C] -> [samples, C] (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(-1, x.shape[-1])


def r2(y_true: np.ndarray, y_pred: np.ndarray, per_column: bool = False) -> float | np.ndarray:
    """Coefficient of determination per column over all samples, averaged over columns.

    A constant column (zero variance) has R^2 = 1 when predicted exactly, else 0, as in sklearn.
    """
    yt, yp = flat(y_true), flat(y_pred)
    if yt.shape != yp.shape:
        raise ValueError(f"r2: shapes differ {yt.shape} vs {yp.shape}")
    ss_res = ((yt - yp) ** 2).sum(axis=0)
    ss_tot = ((yt - yt.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.where(ss_res == 0, 1.0, 0.0))
    return out if per_column else float(out.mean())


def poisson_nll(counts: np.ndarray, expected: np.ndarray, total: bool = True) -> float | np.ndarray:
    """-log P(counts | Poisson(expected)) summed (or elementwise with total=False); expected is clipped
    at 1e-9 so a zero rate with a spike is a large, finite penalty."""
    y = np.asarray(counts, dtype=np.float64)
    lam = np.maximum(np.asarray(expected, dtype=np.float64), EPS)
    nll = lam - y * np.log(lam) + gammaln(y + 1.0)
    return float(nll.sum()) if total else nll


def bits_per_spike(counts: np.ndarray, expected: np.ndarray) -> float:
    """NLB co-bps of `expected` (counts per bin, [trials, bins, neurons]) for `counts`.

    The null model predicts each neuron's mean count per bin over all given trials and bins, so the
    null scores 0 and the true rates score the ceiling; NaN when there are no spikes.
    """
    y = np.asarray(counts, dtype=np.float64)
    if y.shape != np.shape(expected):
        raise ValueError(f"bits_per_spike: shapes differ {y.shape} vs {np.shape(expected)}")
    n_spikes = y.sum()
    if n_spikes <= 0:
        return float("nan")
    null = np.broadcast_to(y.reshape(-1, y.shape[-1]).mean(axis=0), y.shape)
    return float((poisson_nll(y, null) - poisson_nll(y, expected)) / n_spikes / math.log(2.0))


def fit_ridge(X: np.ndarray, Y: np.ndarray, alpha: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) minimising |Y - X W - b|^2 + alpha * n * |W|^2 on standardised columns of X; returned
    in the original units of X (so predict_ridge takes raw features)."""
    X, Y = flat(X), flat(Y)
    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Xs = (X - mu) / sd
    ym = Y.mean(axis=0)
    A = Xs.T @ Xs + alpha * len(Xs) * np.eye(X.shape[1])
    Ws = np.linalg.solve(A, Xs.T @ (Y - ym))
    W = Ws / sd[:, None]
    return W, ym - mu @ W


def predict_ridge(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X @ W + b


def probe_r2(feat_train: np.ndarray, y_train: np.ndarray, feat_test: np.ndarray, y_test: np.ndarray,
             alpha: float = 1e-2) -> float:
    """Linear-probe R^2: ridge from features to targets fit on the train trials, scored on the test."""
    W, b = fit_ridge(feat_train, y_train, alpha)
    pred = predict_ridge(flat(feat_test), W, b)
    return r2(flat(y_test), pred)


def fit_poisson_glm(X: np.ndarray, Y: np.ndarray, alpha: float = 1e-3, iters: int = 100, tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Poisson GLM log E[Y] = X W + b for every column of Y (Newton steps on standardised X, in float64).

    Minimises, per column, mean(exp(eta) - y eta) + alpha/2 |w|^2 on the standardised X (the intercept is
    not penalised): scikit-learn's PoissonRegressor objective. The NLB readout of held-out neurons, and
    the evaluation's rate readout from any method's per-bin features."""
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    Z = np.hstack([(X - mu) / sd, np.ones((len(X), 1))])
    W = np.zeros((Z.shape[1], Y.shape[1]))
    W[-1] = np.log(np.maximum(Y.mean(0), 1e-6))
    reg = alpha * len(Z) * np.eye(Z.shape[1])
    reg[-1, -1] = 0

    def objective(w: np.ndarray, j: int) -> tuple[float, np.ndarray]:
        """(loss, clipped linear predictor) at w: the predictor is reused by the next Newton step."""
        eta = np.clip(Z @ w, -20, 10)
        return float((np.exp(eta) - Y[:, j] * eta).sum() + 0.5 * w @ reg @ w), eta

    for j in range(Y.shape[1]):       # Newton with backtracking, column by column (the objective separates)
        w = W[:, j]
        f, eta = objective(w, j)
        for _ in range(iters):
            lam = np.exp(eta)
            g = Z.T @ (lam - Y[:, j]) + reg @ w
            d = np.linalg.solve((Z * lam[:, None]).T @ Z + reg, g)
            step = 1.0
            while True:                # halve the step until the loss does not rise (or the step is tiny)
                f_new, eta_new = objective(w - step * d, j)
                if f_new <= f or step <= 1e-4:
                    break
                step /= 2
            w, f, eta = w - step * d, f_new, eta_new
            if step * np.abs(d).max() < tol:
                break
        W[:, j] = w
    Wx = W[:-1] / sd[:, None]
    return Wx, W[-1] - mu @ Wx


def predict_poisson_glm(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """exp(X W + b) for X [..., F] -> [..., N] (log-rates clipped to [-20, 10])."""
    X = np.asarray(X, dtype=np.float64)
    return np.exp(np.clip(flat(X) @ W + b, -20, 10)).reshape(X.shape[:-1] + (W.shape[1],))
