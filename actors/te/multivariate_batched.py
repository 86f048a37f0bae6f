"""Greedy multivariate TE selection for many targets at once on a device (the Triton / torch KSG kernels).

The same decisions as actors/te/multivariate.select_sources (inclusion by max-statistic, pruning by
min-statistic, final sequential max-statistic p-values), computed in lockstep over targets so every
kernel launch holds many estimates:

* every prepared block (target next value, target past, source past at each delay) is built once, on
  the CPU in float64 exactly as the CPU path builds it (multivariate.prepared_block: noise seeded per
  block), and copied to the device once; a candidate source is an index into that table;
* one inclusion round of every active target is one *problem* per target: the destination blocks are
  (next value, past + the sources selected so far) - the conditioning embedding shared by all the
  target's candidates - and the items are (candidate, problem, row order) for every remaining candidate
  under the identity order and the round's S surrogate orders (multivariate.round_orders: the same
  orders for every target, so one order table serves the launch); targets with the same number of
  selected sources share a launch (same conditioning width);
* pruning: one problem per (target, selected source), conditioned on the target's other selected
  sources, grouped the same way;
* targets are independent, so a pool spreads them over GPUs (actors.te.pool.run_multivariate).

Screened inclusion (`screen` = M, multivariate module docstring): before a round's launches every
target's linear screen runs on the device in float64 (multivariate.screen_pick: one small matmul per
surrogate order, no permuted copies), and the items become (the order's top-M candidates, problem,
order), so a round costs M (S + 1) estimates per target instead of C (S + 1).

Early stop (exact decisions): the surrogate rounds of an inclusion test go to the device in doubling
chunks (S/16, S/8, ...); a target whose count of rounds with max-over-candidates >= its best candidate's
TE already exceeds alpha (S+1) - 1 is rejected without the rest (its logged p-value is then a lower
bound, marked `early_stop`). Acceptance always sees all S rounds. The max-statistic p-value floor is
1 / (S + 1): S must be at least 1 / alpha - 1 for anything to be accepted (multivariate_config warns).

On the CPU the torch path runs in float64 and its counts equal the oracle's, so the selections (and
the TE values, up to summation order) equal select_sources'; on CUDA the blocks are float32 (see
kernels/te/batch.py for the count precision), which can move a decision only at a near tie.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from actors.common.budget import checkpoint
from actors.te.batched import device_and_dtype, run_batch
from actors.te.config import NetworkConfig
from actors.te.multivariate import (
    Candidate,
    TargetResult,
    _tally,
    check_rows,
    identity_and,
    inverse_orders,
    prepared_block,
    round_orders,
    screen_of,
    screen_pick,
)
from actors.te.significance import p_value

_MAX_ITEMS = 1 << 21          # KSG estimates per launch
_MAX_ORDER_BYTES = 1 << 30    # the pruned kernel's per-launch row tables: orders x destinations x rows x 8 B


@dataclass
class _State:
    """One target's progress through inclusion and pruning."""

    target: int
    remaining: list[Candidate]
    selected: list[Candidate] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    phase: str = "include"                 # include -> prune -> done
    n_include: int = 0
    te: dict = field(default_factory=dict)
    p_raw: dict = field(default_factory=dict)
    p_seq: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Problem:
    """A destination (target next value; past + conditioning sources) and the candidates tested on it:
    under row order q of the launch's table, the candidates cands[pick[q]] (pick [Q, M]; None = all)."""

    target: int
    cond: tuple[Candidate, ...]
    cands: tuple[Candidate, ...]
    pick: np.ndarray | None = None

    def picks(self, n_q: int) -> np.ndarray:
        return np.tile(np.arange(len(self.cands)), (n_q, 1)) if self.pick is None else self.pick


class _Device:
    """The prepared blocks of a dataset on the device and the batched KSG estimate of problems."""

    def __init__(self, data: np.ndarray, cfg: NetworkConfig, targets: Sequence[int], backend: str):
        import torch

        self.torch, self.cfg, self.backend = torch, cfg, backend
        self.dev, self.dtype = device_and_dtype()
        self.n = check_rows(data, cfg)
        lags = cfg.lag_values()
        n_vars = data.shape[1]
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=self.dtype, device=self.dev)  # noqa: E731
        self.src_index = {(i, u): i * len(lags) + li for i in range(n_vars) for li, u in enumerate(lags)}
        xs = np.stack([prepared_block(data, cfg, i, 2, u) for i in range(n_vars) for u in lags])
        ys = {j: prepared_block(data, cfg, j, 0) for j in targets}
        pasts = {j: prepared_block(data, cfg, j, 1) for j in targets}
        self.x = t(xs)
        self.y = {j: t(a) for j, a in ys.items()}
        self.past = {j: t(a) for j, a in pasts.items()}
        self.identity = np.arange(self.n)[None]
        self.launches = self.estimates = 0
        # float64 copies for the linear screen (multivariate.screen_pick), whatever the kernels' dtype
        f64 = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64, device=self.dev)  # noqa: E731
        self.x64 = f64(xs) if self.dtype != torch.float64 else self.x
        self.y64 = {j: f64(a) for j, a in ys.items()} if self.dtype != torch.float64 else self.y
        self.past64 = {j: f64(a) for j, a in pasts.items()} if self.dtype != torch.float64 else self.past

    def estimate(self, problems: Sequence[_Problem], orders: np.ndarray) -> list[np.ndarray]:
        """Per problem, the [Q, M] estimates of its picked candidates under each row order (orders [Q, n]).

        Problems are grouped by conditioning width and cut so one launch holds at most _MAX_ITEMS estimates
        and _MAX_ORDER_BYTES of row tables."""
        torch = self.torch
        out: list[np.ndarray | None] = [None] * len(problems)
        n_q = orders.shape[0]
        perms = torch.as_tensor(orders, dtype=torch.int32, device=self.dev).contiguous()
        by_width: dict[int, list[int]] = {}
        for i, pr in enumerate(problems):
            by_width.setdefault(len(pr.cond), []).append(i)
        max_dest = max(1, _MAX_ORDER_BYTES // (n_q * self.n * 8))
        for idx in by_width.values():
            chunk: list[int] = []
            items = 0
            for i in idx + [None]:
                if i is not None:
                    size = problems[i].picks(n_q).size
                    if not chunk or (items + size <= _MAX_ITEMS and len(chunk) < max_dest):
                        chunk.append(i)
                        items += size
                        continue
                self._launch([problems[j] for j in chunk], perms, out, chunk)
                chunk, items = ([i], problems[i].picks(n_q).size) if i is not None else ([], 0)
        return out   # type: ignore[return-value]

    def _launch(self, probs: list[_Problem], perms, out: list, slots: list[int]) -> None:
        torch = self.torch
        from kernels.te.batch import KSGBatch

        checkpoint()   # between launches: the caller's budget / cancellation
        p = self.cfg.params
        y = torch.stack([self.y[pr.target] for pr in probs])
        z = torch.stack([torch.cat([self.past[pr.target], *(self.x[self.src_index[c]] for c in pr.cond)], dim=1)
                         for pr in probs]).contiguous()
        n_q = perms.shape[0]
        rows, shapes = [], []
        for g, pr in enumerate(probs):
            pick = pr.picks(n_q)                                              # [Q, M]
            src = np.array([self.src_index[c] for c in pr.cands], dtype=np.int64)[pick]
            q = np.broadcast_to(np.arange(n_q)[:, None], pick.shape)
            rows.append(np.stack([src.ravel(), np.full(pick.size, g), q.ravel()], 1))
            shapes.append(pick.shape)
        items = torch.as_tensor(np.concatenate(rows), dtype=torch.int32, device=self.dev).contiguous()
        batch = KSGBatch(x=self.x, y=y, z=z, perms=perms, items=items)
        te = run_batch(batch, k=p.k, theiler=p.theiler, algorithm=p.algorithm, backend=self.backend,
                       store=False).te.cpu().numpy()
        self.launches += 1
        self.estimates += int(items.shape[0])
        start = 0
        for shape, slot in zip(shapes, slots, strict=True):
            size = shape[0] * shape[1]
            out[slot] = te[start:start + size].reshape(shape)
            start += size

    def screen(self, st: _State, inv, m: int | None) -> np.ndarray | None:
        """multivariate.screen_pick for one target's remaining candidates ([Q, M]; None when unscreened)."""
        if m is None or m >= len(st.remaining):
            return None
        torch = self.torch
        idx = torch.as_tensor([self.src_index[c] for c in st.remaining], device=self.dev)
        z = torch.cat([self.past64[st.target], *(self.x64[self.src_index[c]] for c in st.selected)], dim=1)
        return screen_pick(self.y64[st.target], z, self.x64[idx], inv, m)


def select_sources_batched(data: np.ndarray, targets: Sequence[int], cfg: NetworkConfig, *, backend: str,
                           early_stop: bool = True, chunk: int | None = None, screen: int | None = None,
                           stats: dict | None = None) -> list[TargetResult]:
    """select_sources for every target in `targets`, in lockstep batched launches on `backend`
    ('torch' or 'triton'). Inclusion tests send their surrogate rounds in doubling chunks starting at
    `chunk` (default about S/16) so hopeless candidates are rejected after few rounds; `screen` = M screens
    each inclusion round (multivariate module docstring); `stats` accumulates per-phase estimate counts,
    seconds and launches."""
    sig = cfg.significance
    screen = screen_of(cfg, screen)
    t0 = time.perf_counter()
    dev = _Device(data, cfg, targets, backend)
    _tally(stats, "setup", 0, t0)
    n, s = dev.n, sig.n_surrogates
    allowed = sig.alpha * (s + 1) - 1          # accepted iff #exceeding rounds <= allowed
    chunk = s if not early_stop else (chunk or max(1, -(-s // 16)))
    cands = [(i, u) for i in range(data.shape[1]) for u in cfg.lag_values()]
    states = [_State(target=j, remaining=sorted(c for c in cands if c[0] != j)) for j in targets]
    round_index = 0
    while any(st.phase == "include" for st in states):
        active = [st for st in states if st.phase == "include"]
        for st in active:
            if not st.remaining:
                st.phase, st.n_include = "prune", len(st.steps)
        active = [st for st in active if st.phase == "include"]
        if not active:
            break
        _include_round(dev, active, round_index, n, sig, allowed, chunk, screen, stats)
        round_index += 1
    while any(st.phase == "prune" for st in states):
        t0, e0 = time.perf_counter(), dev.estimates
        _prune_round(dev, [st for st in states if st.phase == "prune"], n, sig)
        _tally(stats, "prune", dev.estimates - e0, t0)
    if stats is not None:
        stats["launches"] = stats.get("launches", 0) + dev.launches
        stats["include_rounds"] = stats.get("include_rounds", 0) + round_index
    return [TargetResult(target=st.target, selected=list(st.selected), te={c: st.te[c] for c in st.selected},
                         p_raw=st.p_raw, p_value=st.p_seq, n_obs=n, steps=st.steps) for st in states]


def _include_round(dev: _Device, active: list[_State], r: int, n: int, sig, allowed: float, chunk: int,
                   screen: int | None, stats: dict | None) -> None:
    """One inclusion round of every active target: observed TE of its (screened) remaining candidates, the
    best one's max-statistic test over the round's surrogate orders (in doubling chunks, rejected early
    when hopeless)."""
    table = identity_and(round_orders(n, sig, 0, r))       # [1 + S, n]
    s = table.shape[0] - 1
    t0 = time.perf_counter()
    inv = inverse_orders(table, dev.dev) if screen is not None else None
    picks = [dev.screen(st, inv, screen) for st in active]
    _tally(stats, "screen", 0, t0)
    t0, e0 = time.perf_counter(), dev.estimates
    problems = [_Problem(st.target, tuple(st.selected), tuple(st.remaining)) for st in active]
    undecided = list(range(len(active)))
    count = np.zeros(len(active), dtype=np.int64)
    seen = np.zeros(len(active), dtype=np.int64)
    obs: dict[int, np.ndarray] = {}
    lo, size = 0, chunk
    while lo < 1 + s and undecided:
        hi = min(1 + s, (1 + size) if lo == 0 else lo + size)
        probs = [_Problem(problems[i].target, problems[i].cond, problems[i].cands,
                          None if picks[i] is None else picks[i][lo:hi]) for i in undecided]
        res = dev.estimate(probs, table[lo:hi])
        still = []
        for i, vals in zip(undecided, res, strict=True):          # vals [rows, M]
            if lo == 0:
                obs[i], vals = vals[0], vals[1:]
            best = float(obs[i].max())
            count[i] += int(np.count_nonzero(vals.max(axis=1) >= best))
            seen[i] += vals.shape[0]
            if count[i] <= allowed:
                still.append(i)
        undecided = still
        lo, size = hi, size * 2
    _tally(stats, "include", dev.estimates - e0, t0)
    for i, st in enumerate(active):
        te = obs[i]
        b = int(np.argmax(te))          # first maximum in `remaining` order, as on the CPU path
        best = st.remaining[b if picks[i] is None else int(picks[i][0, b])]
        p = float((1 + count[i]) / (1 + s))
        accepted = p <= sig.alpha
        step = {"step": "include", "candidate": list(best), "te": float(te[b]), "p_value": p, "accepted": accepted}
        if seen[i] < s:
            step["early_stop"] = True   # rejected after seen[i] of s rounds: p_value is a lower bound
        st.steps.append(step)
        if accepted:
            st.selected.append(best)
            st.remaining.remove(best)
        else:
            st.phase = "prune"
            st.n_include = len(st.steps)


def _prune_round(dev: _Device, active: list[_State], n: int, sig) -> None:
    """One pruning round of every target still pruning: each selected source given the other selected ones,
    the weakest against the per-round minimum; a kept weakest ends the target with its final p-values."""
    by_round: dict[int, list[_State]] = {}
    for st in active:
        if not st.selected:
            st.phase = "done"
            continue
        by_round.setdefault(len(st.steps) - st.n_include, []).append(st)
    for r, group in by_round.items():
        orders = identity_and(round_orders(n, sig, 1, r))
        problems = [_Problem(st.target, tuple(o for o in st.selected if o != c), (c,))
                    for st in group for c in st.selected]
        res = iter(dev.estimate(problems, orders))
        for st in group:
            vals = np.vstack([next(res)[:, 0] for _ in st.selected])   # [m, 1 + S]
            te = {c: float(vals[i, 0]) for i, c in enumerate(st.selected)}
            surr = vals[:, 1:]
            w = min(range(len(st.selected)), key=lambda i: te[st.selected[i]])   # first minimum
            weakest = st.selected[w]
            p_min = p_value(te[weakest], surr.min(axis=0))
            kept = p_min <= sig.alpha
            st.steps.append({"step": "prune", "candidate": list(weakest), "te": te[weakest], "p_value": p_min,
                             "kept": kept})
            if kept:
                peak = surr.max(axis=0)
                st.te = te
                st.p_raw = {c: p_value(te[c], surr[i]) for i, c in enumerate(st.selected)}
                st.p_seq = {c: p_value(te[c], peak) for c in st.selected}
                st.phase = "done"
            else:
                st.selected.remove(weakest)
                if not st.selected:
                    st.phase = "done"
