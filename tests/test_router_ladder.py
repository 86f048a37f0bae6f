"""Parallel tempering (actors/router/ladder.py, problems.py) against exact references: a K-state
Boltzmann distribution (TV), the 4x4 Ising model by enumeration of all 2^16 states, a double well
(PT mixes, a single cold chain does not), Gelman-Rubin across seeds, and batch assignment against the
exact optimum of scipy.optimize.milp (and simulated annealing at the same number of energy evaluations).

Monte Carlo tolerances come from standard errors of independent ladders (each ladder's time average
is one independent draw). torch runs single-threaded here: the batches are small, and intra-op threads
on a shared 2-core machine cost 10x more than they save."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actors.common.config import validated
from actors.common.errors import InputError
from actors.router.boltzmann import boltzmann
from actors.router.ladder import (
    LadderConfig,
    anneal_assignment,
    gelman_rubin,
    run_ladder,
    solve_assignment,
)
from actors.router.problems import (
    AssignmentInstance,
    CategoricalProblem,
    DoubleWellProblem,
    IsingProblem,
    assignment_milp,
    ising_exact,
    random_assignment,
)

LEVELS = np.array([0.0, 0.3, 1.0, 1.1, 2.5, 4.0, 0.2, 3.0])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _categorical_tv(device: str) -> tuple[np.ndarray, object]:
    cfg = LadderConfig(n_replicas=4, T_min=0.5, T_max=4.0, n_ladders=128, n_sweeps=2200, burn_in=200,
                       record="all", seed=0, device=device)
    res = run_ladder(CategoricalProblem(LEVELS, device=device), cfg)
    s = res.samples[..., 0].astype(int)                       # [n, ladders, R]
    exact = boltzmann(np.tile(LEVELS, (4, 1)), res.temperatures).p
    tv = np.array([0.5 * np.abs(np.bincount(s[:, :, i].ravel(), minlength=LEVELS.size) / s[:, :, i].size
                                - exact[i]).sum() for i in range(4)])
    return tv, res


def test_k_state_boltzmann_tv_below_001_at_every_rung():
    tv, res = _categorical_tv("cpu")
    assert np.all(tv < 0.01), tv
    assert res.round_trips.sum() > 1000
    assert np.all(res.swap_acceptance > 0.5)
    assert res.rhat[0] < 1.01


def _ising_moments(device: str, seed: int = 1):
    cfg = LadderConfig(n_replicas=4, T_min=2.0, T_max=4.0, n_ladders=64, n_sweeps=3200, burn_in=200, seed=seed,
                       device=device)
    res = run_ladder(IsingProblem(4, device=device), cfg)
    x = res.samples[:, :, 0, :]                                # [n, ladders, (E, M)]
    E, M = x[..., 0], x[..., 1]
    out = {}
    for name, v in (("E", E), ("E2", E ** 2), ("absM", np.abs(M)), ("M2", M ** 2)):
        per = v.mean(axis=0)                                   # one independent estimate per ladder
        out[name] = (per.mean(), per.std(ddof=1) / math.sqrt(per.size))
    return out, res


def test_ising_4x4_moments_match_exact_enumeration():
    exact = ising_exact(4, 2.0)
    got, res = _ising_moments("cpu")
    for name, (mean, se) in got.items():
        assert abs(mean - exact[name]) < 4 * se, (name, mean, exact[name], se)
        assert abs(mean - exact[name]) < 0.005 * abs(exact[name])
    assert max(res.rhat) < 1.01


def test_ising_exact_enumeration_limits():
    # T -> inf: <E> = 0, <M^2> = N (independent spins); T small: ground state E = -2N, |M| = N
    hot = ising_exact(4, 1e9)
    assert abs(hot["E"]) < 1e-6 and hot["M2"] == pytest.approx(16.0, rel=1e-6)
    cold = ising_exact(4, 0.05)
    assert cold["E"] == pytest.approx(-32.0, rel=1e-9) and cold["absM"] == pytest.approx(16.0, rel=1e-9)


def _double_well(n_replicas: int, T_max: float, seed: int, n_ladders: int = 4, n_sweeps: int = 12000):
    cfg = LadderConfig(n_replicas=n_replicas, T_min=0.1, T_max=T_max, n_ladders=n_ladders, n_sweeps=n_sweeps,
                       burn_in=1000, seed=seed)
    return run_ladder(DoubleWellProblem(h=2.0), cfg)


def test_double_well_pt_mixes_and_single_cold_chain_does_not():
    # barrier h = 2 at T = 0.1: crossing needs exp(-20) per attempt
    pt = _double_well(8, 3.0, seed=0, n_ladders=8)
    x = pt.samples[:, :, 0, 0]
    frac = (x > 0).mean(axis=0)                               # share of time in the right well, per ladder
    crossings = (np.diff(np.sign(x), axis=0) != 0).sum(axis=0)
    se = frac.std(ddof=1) / math.sqrt(frac.size)
    assert abs(frac.mean() - 0.5) < 4 * se + 1e-3, (frac, se)   # symmetric wells: half the time each
    assert np.all(crossings > 500)
    assert np.all(pt.round_trips > 100)
    single = _double_well(1, 0.1, seed=0, n_ladders=8)
    xs = single.samples[:, :, 0, 0]
    assert np.all((np.diff(np.sign(xs), axis=0) != 0).sum(axis=0) == 0)   # never crosses
    assert set(np.unique((xs > 0).mean(axis=0))) <= {0.0, 1.0}
    assert single.rhat[0] > 1.5


def test_gelman_rubin_below_101_over_four_seeds():
    chains = np.concatenate([_double_well(8, 3.0, seed=s, n_ladders=2, n_sweeps=8000).samples[:, :, 0, 0].T
                             for s in range(4)])
    assert chains.shape[0] == 8
    assert gelman_rubin(chains) < 1.01


def test_gelman_rubin_reference_values():
    rng = np.random.default_rng(0)
    same = rng.standard_normal((8, 4000))
    assert gelman_rubin(same) < 1.005
    shifted = same + np.arange(8)[:, None]
    assert gelman_rubin(shifted) > 2.0
    # hand computation for 2 chains of 4 (split into 4 halves of 2)
    x = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 1.0]])
    h = np.array([[1, 2], [2, 2], [3, 4], [5, 1]], dtype=float)
    W = h.var(axis=1, ddof=1).mean()
    B = 2 * h.mean(axis=1).var(ddof=1)
    assert gelman_rubin(x) == pytest.approx(math.sqrt((0.5 * W + B / 2) / W), rel=1e-12)


def test_adaptive_spacing_evens_out_swap_acceptance():
    # the Ising heat-capacity peak near Tc = 2.27 makes a geometric ladder's acceptance uneven
    base = dict(n_replicas=6, T_min=1.5, T_max=6.0, n_ladders=32, n_sweeps=1600, burn_in=1000, adapt_every=50,
                record="none", seed=3)
    geo = run_ladder(IsingProblem(4), LadderConfig(**base, adapt=False))
    ada = run_ladder(IsingProblem(4), LadderConfig(**base, adapt=True))
    assert ada.temperatures[0] == pytest.approx(1.5) and ada.temperatures[-1] == pytest.approx(6.0)
    spread = lambda a: a.max() - a.min()                      # noqa: E731
    assert spread(ada.swap_acceptance) < 0.5 * spread(geo.swap_acceptance), (geo.swap_acceptance,
                                                                              ada.swap_acceptance)
    assert ada.swap_acceptance.min() > geo.swap_acceptance.min()


def test_ladder_is_deterministic_per_seed():
    cfg = LadderConfig(n_replicas=4, T_min=0.5, T_max=4.0, n_ladders=8, n_sweeps=300, burn_in=50, seed=7)
    a = run_ladder(CategoricalProblem(LEVELS), cfg)
    b = run_ladder(CategoricalProblem(LEVELS), cfg)
    c = run_ladder(CategoricalProblem(LEVELS), cfg.model_copy(update={"seed": 8}))
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.swap_acceptance, b.swap_acceptance)
    assert not np.array_equal(a.samples, c.samples)


# ------------------------------------------------------------------------------ batch assignment
PT_CFG = dict(n_replicas=16, T_min=0.005, T_max=0.5, n_ladders=8, n_sweeps=1600, burn_in=320, adapt_every=80,
              record="none")


def test_assignment_pt_within_1pct_of_milp_and_vs_annealing():
    gaps_pt, gaps_sa = [], []
    for seed in range(4):
        inst = random_assignment(40, 5, seed)
        opt, a_opt = assignment_milp(inst)
        assert inst.evaluate(a_opt) == (pytest.approx(opt), True)
        pt = solve_assignment(inst, LadderConfig(**PT_CFG, seed=seed))
        assert pt.feasible
        assert inst.evaluate(pt.assignment) == (pytest.approx(pt.objective), True)
        assert pt.objective >= opt - 1e-9 * abs(opt)          # the MILP optimum is a lower bound
        gaps_pt.append((pt.objective - opt) / abs(opt))
        sa = anneal_assignment(inst, n_chains=PT_CFG["n_replicas"] * PT_CFG["n_ladders"], n_sweeps=PT_CFG["n_sweeps"],
                               T0=PT_CFG["T_max"], T_end=PT_CFG["T_min"], seed=seed)
        assert sa.energy_evals == pt.energy_evals
        gaps_sa.append((sa.objective - opt) / abs(opt))
    print(f"PT gaps {np.round(gaps_pt, 5)} SA gaps {np.round(gaps_sa, 5)} at {pt.energy_evals} evaluations")
    assert max(gaps_pt) < 0.01, gaps_pt


@pytest.mark.parametrize("make, field", [
    (lambda: AssignmentInstance(cost=np.zeros((3, 0)), money=np.zeros((3, 0)), capacity=np.zeros(0)), "K"),
    (lambda: AssignmentInstance(cost=np.array([[1.0, np.nan]]), money=np.ones((1, 2)), capacity=[1, 1]), "cost"),
    (lambda: AssignmentInstance(cost=np.ones((1, 2)), money=np.ones((1, 2)), capacity=[1, 1], budget=-1.0), "budget"),
    (lambda: AssignmentInstance(cost=np.ones((1, 2)), money=np.ones((1, 2)), capacity=[1, 1], budget=float("nan")),
     "budget"),
    (lambda: AssignmentInstance(cost=np.ones((1, 2)), money=-np.ones((1, 2)), capacity=[1, 1]), "money"),
    (lambda: AssignmentInstance(cost=np.ones((3, 2)), money=np.ones((3, 2)), capacity=[1, 1]), "capacity"),
    (lambda: AssignmentInstance(cost=np.ones((1, 2)), money=np.ones((1, 2)), capacity=[1, 1], budget=0.5), "budget"),
    (lambda: validated(LadderConfig, {"T_min": 2.0, "T_max": 1.0}), "LadderConfig"),
    (lambda: validated(LadderConfig, {"n_replicas": 0}), "n_replicas"),
    (lambda: CategoricalProblem([]), "K"),
    (lambda: CategoricalProblem([0.0, float("inf")]), "levels"),
    (lambda: gelman_rubin(np.zeros((1, 10))), "chains"),
])
def test_ladder_bad_input_names_field(make, field):
    with pytest.raises(InputError) as err:
        make()
    assert err.value.field == field


# ------------------------------------------------------------------------------ CUDA path
@pytest.mark.gpu
def test_cuda_ladder_statistics_match_cpu():
    tv_gpu, res_gpu = _categorical_tv("cuda")
    tv_cpu, _ = _categorical_tv("cpu")
    assert res_gpu.device == "cuda"
    assert np.all(tv_gpu < 0.01), tv_gpu
    assert np.all(np.abs(tv_gpu - tv_cpu) < 0.01)
    exact = ising_exact(4, 2.0)
    got_gpu, _ = _ising_moments("cuda")
    got_cpu, _ = _ising_moments("cpu")
    for name in exact:
        (mg, sg), (mc, sc) = got_gpu[name], got_cpu[name]
        assert abs(mg - exact[name]) < 4 * sg, (name, mg, exact[name])
        assert abs(mg - mc) < 4 * math.hypot(sg, sc), (name, mg, mc)
    inst = random_assignment(40, 5, 0)
    opt, _ = assignment_milp(inst)
    pt = solve_assignment(inst, LadderConfig(**PT_CFG, seed=0, device="cuda"))
    assert pt.feasible and (pt.objective - opt) / abs(opt) < 0.01
