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

__all__ = ["bits_per_spike", "fit_glm_readout", "fit_poisson_glm", "fit_poisson_glm_cv", "fit_ridge", "flat", "poisson_nll", "predict_poisson_glm", "predict_ridge", "probe_r2", "r2"]

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


def fit_poisson_glm(X: np.ndarray, Y: np.ndarray, alpha: float | np.ndarray = 1e-3, iters: int = 100,
                    tol: float = 1e-7, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Poisson GLM log E[Y] = X W + b for every column of Y (Newton steps on standardised X, in float64).

    Minimises, per column j, mean(exp(eta) - y eta) + alpha_j/2 |w|^2 on the standardised X (the intercept
    is not penalised): scikit-learn's PoissonRegressor objective; `alpha` is one penalty or one per column.
    The NLB readout of held-out neurons, and the evaluation's rate readout from any method's features.
    `device`: where torch runs the Newton steps (a CUDA device for ~10^5 x 10^2 features)."""
    Z, mu, sd = _standardised(X)
    W = _newton_glm(Z, np.asarray(Y, np.float64), _per_column(alpha, Y.shape[1]), device=device, iters=iters, tol=tol)
    return _unstandardise(W, mu, sd)


def fit_poisson_glm_cv(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, alphas: list[float], folds: int = 3,
                       seed: int = 0, device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`fit_poisson_glm` with each column's penalty chosen from `alphas` by K-fold cross-validation over
    `groups` (trials: a trial's bins stay in one fold): the alpha of least held-out Poisson NLL, ties to
    the larger. Returns (W, b, chosen alpha per column). Why: exp() turns a feature direction the training
    trials barely span into a huge rate on a test trial; how much shrinkage a method's features need
    differs by method and neuron, and only the training spikes may say it (never the true rates)."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    ids, inverse = np.unique(groups, return_inverse=True)
    if folds < 2 or len(ids) < folds:
        raise ValueError(f"fit_poisson_glm_cv: {len(ids)} groups cannot make {folds} folds")
    fold = (np.random.default_rng(seed).permutation(len(ids)) % folds)[inverse]
    grid = sorted(float(a) for a in alphas)[::-1]          # strongest first: each fit starts the next
    nll = np.zeros((len(grid), Y.shape[1]))
    for k in range(folds):
        tr, va = fold != k, fold == k
        Z, mu, sd = _standardised(X[tr])
        Zva = _design(X[va], mu, sd)
        W = None
        for i, a in enumerate(grid):
            W = _newton_glm(Z, Y[tr], _per_column(a, Y.shape[1]), W, device=device)
            eta = np.clip(Zva @ W, -20, 10)
            nll[i] += (np.exp(eta) - Y[va] * eta).sum(0)
    best = np.array(grid)[np.argmin(nll, axis=0)]          # argmin takes the first (strongest) of equals
    W, b = fit_poisson_glm(X, Y, best, device=device)
    return W, b, best


def fit_glm_readout(train_features: np.ndarray, spikes: np.ndarray, alpha: float | str, alphas: list[float],
                    folds: int = 3, seed: int = 0, device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rate readout of per-bin features [trials, T, F] to spikes [trials, T, N]: a Poisson GLM of every
    neuron with penalty `alpha`, or with alpha = "cv" each neuron's penalty chosen from `alphas` by
    `folds`-fold cross-validation over the trials. Returns (W, b, alpha per neuron)."""
    X, Y = flat(train_features), flat(spikes)
    if alpha == "cv":
        groups = np.repeat(np.arange(train_features.shape[0]), int(np.prod(train_features.shape[1:-1])))
        return fit_poisson_glm_cv(X, Y, groups, alphas, folds, seed, device)
    W, b = fit_poisson_glm(X, Y, float(alpha), device=device)
    return W, b, np.full(Y.shape[1], float(alpha))


def _per_column(alpha: float | np.ndarray, n: int) -> np.ndarray:
    a = np.broadcast_to(np.asarray(alpha, np.float64), (n,)).copy()
    if (a < 0).any() or not np.isfinite(a).all():
        raise ValueError(f"GLM penalty alpha must be finite and >= 0, got {alpha}")
    return a


def _standardised(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """([X standardised | 1], mean, sd) with constant columns left unscaled."""
    X = np.asarray(X, np.float64)
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return _design(X, mu, sd), mu, sd


def _design(X: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """[(X - mu) / sd | 1]: the GLM's design matrix under a given standardisation."""
    return np.hstack([(X - mu) / sd, np.ones((len(X), 1))])


def _unstandardise(W: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Wx = W[:-1] / sd[:, None]
    return Wx, W[-1] - mu @ Wx


def _spd_solve(H, b):
    """Solve H x = b for a batch of symmetric positive-definite H [C, p, p] by Cholesky. Not LU: torch
    2.13's batched `linalg.solve` on the CPU intermittently failed (oneMKL "Parameter 6 was incorrect on
    entry to DLASWP") or returned steps of 1e15 for p = 193 (2026-12-05, this VM). A matrix that is not
    numerically positive definite gets a tiny ridge (1e-10 of its largest diagonal entry) and is refactored."""
    import torch

    L, info = torch.linalg.cholesky_ex(H)
    if bool((info > 0).any()):
        scale = H.diagonal(dim1=-2, dim2=-1).abs().amax(-1).clamp_min(1.0) * 1e-10 * (info > 0)
        L, info = torch.linalg.cholesky_ex(H + torch.diag_embed(scale[:, None].expand(-1, H.shape[-1])))
        if bool((info > 0).any()):
            raise FloatingPointError("the GLM's Hessian is not positive definite (non-finite features?)")
    return torch.cholesky_solve(b, L)


def _newton_glm(Z: np.ndarray, Y: np.ndarray, alpha: np.ndarray, W0: np.ndarray | None = None, *,
                device: str = "cpu", iters: int = 100, tol: float = 1e-7) -> np.ndarray:
    """Newton with backtracking on the penalised Poisson NLL, every column at once (the objective
    separates: one Hessian and one step length per column; a converged column stops moving). `W0` a warm
    start (else the intercept at the mean count, weights 0)."""
    import torch

    dev = torch.device(device)
    Zt = torch.as_tensor(Z, dtype=torch.float64, device=dev)
    Yt = torch.as_tensor(Y, dtype=torch.float64, device=dev)
    n, p = Zt.shape
    if W0 is None:
        W = torch.zeros(p, Yt.shape[1], dtype=torch.float64, device=dev)
        W[-1] = torch.log(Yt.mean(0).clamp_min(1e-6))
    else:
        W = torch.as_tensor(W0, dtype=torch.float64, device=dev).clone()
    pen = torch.ones(p, 1, dtype=torch.float64, device=dev)
    pen[-1] = 0                                            # the intercept is not penalised
    lam_reg = torch.as_tensor(alpha, dtype=torch.float64, device=dev)[None] * n * pen      # [p, C]

    def objective(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss per column, clipped linear predictor) at w: the predictor is reused by the next step."""
        eta = torch.clamp(Zt @ w, -20, 10)
        return (torch.exp(eta) - Yt * eta).sum(0) + 0.5 * (lam_reg * w * w).sum(0), eta

    f, eta = objective(W)
    moving = torch.ones(Yt.shape[1], dtype=torch.bool, device=dev)
    for _ in range(iters):
        lam = torch.exp(eta)
        g = Zt.T @ (lam - Yt) + lam_reg * W
        H = torch.stack([(Zt * lam[:, j:j + 1]).T @ Zt for j in range(Yt.shape[1])])      # [C, p, p]
        H = H + torch.diag_embed(lam_reg.T)
        d = _spd_solve(H, g.T[..., None])[..., 0].T                                        # [p, C]
        d = d * moving
        step = torch.ones(Yt.shape[1], dtype=torch.float64, device=dev)
        while True:              # halve each column's step until its loss does not rise (or it is tiny)
            f_new, eta_new = objective(W - step * d)
            worse = (f_new > f) & (step > 1e-4)
            if not bool(worse.any()):
                break
            step = torch.where(worse, step / 2, step)
        W, f, eta = W - step * d, f_new, eta_new
        moving = moving & (step * d.abs().amax(0) >= tol)
        if not bool(moving.any()):
            break
    return W.cpu().numpy()


def predict_poisson_glm(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """exp(X W + b) for X [..., F] -> [..., N] (log-rates clipped to [-20, 10])."""
    X = np.asarray(X, dtype=np.float64)
    return np.exp(np.clip(flat(X) @ W + b, -20, 10)).reshape(X.shape[:-1] + (W.shape[1],))
