"""The router's energy per (request, model): E = w_cost*cost - w_quality*quality + w_latency*latency
+ w_uncertainty*uncertainty + w_context*context_mismatch, and its weights learned from feedback.

Low energy = a good choice. `energies` is the [N, K] matrix Boltzmann selection (boltzmann.py) and the
replica ladders (ladder.py) consume. `fit_weights` learns the weights from observed choices (which
model was preferred for each request) by gradient descent on the Boltzmann (conditional-logit)
likelihood p_k = exp(-E_k/T)/Z at the fixed temperature T: the loss is convex in w, so the fit is the
maximum-likelihood estimate, and its standard errors come from the observed Fisher information
(the covariance of the features under p), which is how the tests check planted weights are recovered.

    terms = EnergyTerms(cost=c, quality=q, latency=l, uncertainty=u, context_mismatch=m)   # each [N, K]
    E = energies(terms, EnergyWeights(w_cost=1.0, w_quality=2.0))
    fit = fit_weights(terms, chosen)        # chosen: [N] ints (or [N, K] target probabilities)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
from scipy.special import log_softmax, logsumexp

from actors.common.errors import InputError
from actors.router.checks import finite_array, positive_int

__all__ = ["FACTORS", "SIGNS", "EnergyTerms", "EnergyWeights", "WeightFit", "energies", "fit_weights", "neg_log_likelihood"]

FACTORS = ("cost", "quality", "latency", "uncertainty", "context_mismatch")
SIGNS = np.array([1.0, -1.0, 1.0, 1.0, 1.0])   # quality lowers the energy, everything else raises it
_WEIGHTS = ("w_cost", "w_quality", "w_latency", "w_uncertainty", "w_context")


@dataclass(frozen=True)
class EnergyWeights:
    """Weights of the five factors (floats, finite); `as_array` is in FACTORS order."""

    w_cost: float = 1.0
    w_quality: float = 1.0
    w_latency: float = 0.0
    w_uncertainty: float = 0.0
    w_context: float = 0.0

    def __post_init__(self) -> None:
        for name in _WEIGHTS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v):
                raise InputError(name, f"{v!r} is not a finite number", "finite float")
            object.__setattr__(self, name, float(v))

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, n) for n in _WEIGHTS], dtype=np.float64)

    @classmethod
    def from_array(cls, w) -> EnergyWeights:
        w = finite_array(w, "weights", ndim=1, shape=(len(_WEIGHTS),))
        return cls(**dict(zip(_WEIGHTS, map(float, w))))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class EnergyTerms:
    """The five factors, each a finite float64 [N, K] array (N requests, K >= 1 models); missing
    factors may be given as None and are zeros."""

    cost: np.ndarray
    quality: np.ndarray
    latency: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    context_mismatch: np.ndarray | None = None

    def __post_init__(self) -> None:
        cost = finite_array(self.cost, "cost", ndim=2)
        n, k = cost.shape
        if k == 0:
            raise InputError("K", "no candidate models (cost has 0 columns)", ">= 1")
        object.__setattr__(self, "cost", cost)
        for name in FACTORS[1:]:
            v = getattr(self, name)
            arr = np.zeros((n, k)) if v is None else finite_array(v, name, ndim=2, shape=(n, k))
            object.__setattr__(self, name, arr)

    @property
    def shape(self) -> tuple[int, int]:
        return self.cost.shape

    def stacked(self) -> np.ndarray:
        """[N, K, 5] signed features X with E = X @ w (FACTORS order)."""
        return np.stack([getattr(self, f.name) for f in fields(self)], axis=-1) * SIGNS


def energies(terms: EnergyTerms, weights: EnergyWeights) -> np.ndarray:
    """E[N, K] = w_cost*cost - w_quality*quality + w_latency*latency + w_uncertainty*uncertainty
    + w_context*context_mismatch."""
    w = weights
    return (w.w_cost * terms.cost - w.w_quality * terms.quality + w.w_latency * terms.latency
            + w.w_uncertainty * terms.uncertainty + w.w_context * terms.context_mismatch)


@dataclass
class WeightFit:
    """Result of fit_weights: the weights, their standard errors, the loss path and convergence."""

    weights: EnergyWeights
    stderr: np.ndarray            # [5], from the observed Fisher information (nan for fixed factors)
    loss: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    grad_norm: float = float("nan")


def _targets(outcomes, n: int, k: int) -> np.ndarray:
    out = np.asarray(outcomes)
    if out.ndim == 1:
        if out.shape[0] != n:
            raise InputError("outcomes", f"{out.shape[0]} outcomes for {n} requests")
        if not np.issubdtype(out.dtype, np.integer):
            raise InputError("outcomes", "chosen indices must be integers", f"0 .. {k - 1}")
        if out.size and (out.min() < 0 or out.max() >= k):
            raise InputError("outcomes", "a chosen index is out of range", f"0 .. {k - 1}")
        q = np.zeros((n, k))
        q[np.arange(n), out] = 1.0
        return q
    q = finite_array(out, "outcomes", ndim=2, shape=(n, k), nonnegative=True)
    if not np.allclose(q.sum(axis=1), 1.0, atol=1e-9):
        raise InputError("outcomes", "target probabilities must sum to 1 per request", "rows summing to 1")
    return q


def fit_weights(terms: EnergyTerms, outcomes, *, T: float = 1.0, init: EnergyWeights | None = None,
                fit: tuple[str, ...] = _WEIGHTS, l2: float = 0.0, nonnegative: bool = False,
                max_iter: int = 5000, tol: float = 1e-8, step: float = 1.0) -> WeightFit:
    """Energy weights maximising the Boltzmann likelihood of the observed choices (gradient descent).

    outcomes: [N] chosen model per request (ints), or [N, K] target probabilities. Only the weights
    named in `fit` move (the others stay at `init`). The features are scaled to unit spread inside
    the optimiser (a diagonal preconditioner) and each step is found by Armijo backtracking, so plain
    gradient descent converges on the convex loss. `nonnegative` projects the weights onto w >= 0.
    """
    if not (np.isfinite(T) and T > 0):
        raise InputError("T", f"{T!r}: fitting needs a positive temperature", "> 0")
    if l2 < 0 or not np.isfinite(l2):
        raise InputError("l2", f"{l2!r} is out of range", ">= 0")
    max_iter = positive_int(max_iter, "max_iter")
    unknown = [f for f in fit if f not in _WEIGHTS]
    if unknown or not fit:
        raise InputError("fit", f"unknown or empty weight names {unknown}", ", ".join(_WEIGHTS))
    n, k = terms.shape
    if n == 0:
        raise InputError("outcomes", "no requests to fit on", ">= 1 request")
    q = _targets(outcomes, n, k)
    X = terms.stacked() / T                                   # E/T = X @ w
    mask = np.array([name in fit for name in _WEIGHTS])
    w = (init or EnergyWeights()).as_array()
    # unit-spread scaling of the free features (within-request spread: what the likelihood sees)
    spread = np.sqrt(((X - X.mean(axis=1, keepdims=True)) ** 2).mean(axis=(0, 1)))
    scale = np.where(mask & (spread > 0), 1.0 / np.where(spread > 0, spread, 1.0), 0.0)
    free = mask & (spread > 0)

    def loss_grad(wv: np.ndarray) -> tuple[float, np.ndarray]:
        logits = -(X @ wv)
        logp = log_softmax(logits, axis=1)
        p = np.exp(logp)
        loss = -np.sum(q * logp) / n + 0.5 * l2 * np.sum(wv[free] ** 2)
        grad = np.einsum("nk,nkf->f", q - p, X) / n + l2 * np.where(free, wv, 0.0)
        return float(loss), grad

    loss, grad = loss_grad(w)
    result = WeightFit(weights=EnergyWeights.from_array(w), stderr=np.full(5, np.nan), loss=[loss])
    lr = step
    for it in range(1, max_iter + 1):
        direction = -grad * scale ** 2                        # preconditioned descent direction
        if nonnegative:
            direction = np.where((w <= 0) & (direction < 0), 0.0, direction)
        gnorm = float(np.sqrt(np.sum((grad * scale) ** 2 * free)))
        result.grad_norm, result.n_iter = gnorm, it - 1
        if gnorm < tol:
            result.converged = True
            break
        lr = min(lr * 2.0, 1e6)
        while True:                                           # Armijo backtracking
            cand = w + lr * direction
            if nonnegative:
                cand = np.where(free, np.maximum(cand, 0.0), cand)
            new_loss, new_grad = loss_grad(cand)
            if new_loss <= loss + 1e-4 * float(grad @ (cand - w)) or lr < 1e-14:
                break
            lr *= 0.5
        if lr < 1e-14:
            break
        w, loss, grad = cand, new_loss, new_grad
        result.loss.append(loss)
    result.weights = EnergyWeights.from_array(w)
    # observed Fisher information: mean over requests of Cov_p(X), + l2, restricted to the free weights
    p = np.exp(log_softmax(-(X @ w), axis=1))
    mu = np.einsum("nk,nkf->nf", p, X)
    info = np.einsum("nk,nkf,nkg->fg", p, X, X) - np.einsum("nf,ng->fg", mu, mu)
    idx = np.flatnonzero(free)
    sub = info[np.ix_(idx, idx)] + n * l2 * np.eye(idx.size)
    try:
        cov = np.linalg.inv(sub)
        result.stderr[idx] = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        pass
    return result


def neg_log_likelihood(terms: EnergyTerms, outcomes, weights: EnergyWeights, T: float = 1.0) -> float:
    """Mean negative log-likelihood of the choices under Boltzmann(E(weights), T) (a fit diagnostic)."""
    n, k = terms.shape
    q = _targets(outcomes, n, k)
    E = energies(terms, weights) / T
    return float(-np.sum(q * (-E - logsumexp(-E, axis=1, keepdims=True))) / n)
