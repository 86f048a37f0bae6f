"""Write tests/data/gaslit_dop853_1000.parquet: the scipy DOP853 oracle for the sweep's regime labels.

    python tests/data/make_gaslit_reference.py                 # all cores, ~10 min on 2 cores
    python tests/data/make_gaslit_reference.py --rows 0:5      # print a few rows, write nothing
    python tests/data/make_gaslit_reference.py --relabel       # re-apply the regime rule to the file

1000 GASLIT-AF points drawn uniformly (seeded) from the demo map's box, gamma in [0, 1] x
Lambda(0) in [0, 10], every other parameter and state at the model's default. Each point is
integrated by the sweep's own scipy reference path (actors/sweep/scipy_backend.solve_scipy:
solve_ivp DOP853, a twin renormalised every `renorm_interval` for lambda_max) at rtol 1e-10 and
labelled by the sweep's regime rule (actors/sweep/engine.label_regimes) with the solver block's defaults.

Why a committed file: 1000 DOP853 runs at rtol 1e-10 take minutes even with a fast right-hand side,
too long for CI. tests/test_sweep_reference.py recomputes a seeded handful of rows live (so the file
is provably what this script writes) and checks our engine against all of them.

Why HORIZON = 200 < the model's 400: CI must run our engine on all 1000 points in about a minute on
two cores, and the batched integrator's wall time is set by its slowest (chaotic) trajectory. WINDOW
= 0.5 keeps the features' window at the real preset's 100 time units (0.25 x 400): with a 25-unit
window (0.25 x 100) the finite-time Lyapunov exponent of intermittent orbits in the chaotic band
(gamma > 0.5) was too noisy, 2.1% of labels flipped between DOP853 and our engine. The test runs
the engine over the same horizon and window, with every threshold at its default.
Uses scipy + the model registry only (no torch, no Ray).
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from actors.sweep.config import ScipySolver  # noqa: E402
from actors.sweep.engine import label_regimes  # noqa: E402
from actors.sweep.models import get_model  # noqa: E402
from actors.sweep.regime import relative_amplitude  # noqa: E402
from actors.sweep.scipy_backend import solve_scipy  # noqa: E402

MODEL = "gaslit_af"
N_POINTS = 1000
SEED = 20261123
BOX = {"gamma": (0.0, 1.0), "Lambda": (0.0, 10.0)}   # gamma: parameter, Lambda: initial state
HORIZON = (0.0, 200.0)
WINDOW = 0.5            # features over the last 100 time units: the window length of the real preset
RTOL, ATOL = 1e-10, 1e-12
SLICE = 2               # rows per task: chaotic rows are slow, small tasks balance the pool
OUT = Path(__file__).resolve().parent / "gaslit_dop853_1000.parquet"


def points(n: int = N_POINTS, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(params [n, m], u0 [n, n_states]): the seeded uniform draw over BOX, defaults elsewhere."""
    m = get_model(MODEL)
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(*BOX["gamma"], n)
    lam0 = rng.uniform(*BOX["Lambda"], n)
    params = np.tile(m.default_params, (n, 1))
    params[:, m.param_names.index("gamma")] = gamma
    u0 = np.tile(m.default_state, (n, 1))
    u0[:, m.state_names.index("Lambda")] = lam0
    return params, u0


def reference_solver() -> ScipySolver:
    """The oracle's settings: DOP853 at rtol 1e-10 over HORIZON, every rule threshold at its default."""
    return ScipySolver(method="DOP853", rtol=RTOL, atol=ATOL, t_span=HORIZON, window=WINDOW)


def _scalar_rhs():
    """The registry's equations lambdified to plain-Python floats (math module).

    Why: rhs_numpy pays ~0.3 ms of array overhead per call on one or two rows; DOP853 at rtol 1e-10
    calls it ~10^5 times per chaotic trajectory. Same SymPy expressions, ~10x cheaper per call.
    """
    import sympy as sp

    m = get_model(MODEL)
    f = sp.lambdify(m.state_symbols + m.param_symbols, m.equations, modules="math", cse=True)

    def rhs(u: np.ndarray, p: np.ndarray) -> np.ndarray:   # u [B, n], p [m] -> du/dt [B, n]
        pl = p.tolist()
        return np.array([f(*row, *pl) for row in u.tolist()])

    return rhs


def label(u_min, u_max, lyapunov_max, flow_log_ratio, blowup, finished, u_final,
          params) -> tuple[np.ndarray, np.ndarray]:
    """(regime, attractor) by the sweep's rule with the reference settings' thresholds."""
    return label_regimes(get_model(MODEL), reference_solver(), u_min, u_max, lyapunov_max, flow_log_ratio,
                         blowup, finished, u_final, params)


def relabel(path: Path) -> pd.DataFrame:
    """The file's rows with regime/attractor recomputed from its stored DOP853 features (no solving).

    Why: the oracle is the integration; the rule is shared with the engine under test. When the
    rule changes, the labels follow without another hour of DOP853.
    """
    frame = pd.read_parquet(path)
    params, _ = points()
    cols = lambda suffix: frame[[f"{s}{suffix}" for s in get_model(MODEL).state_names]].to_numpy()  # noqa: E731
    regime, attractor = label(cols("_min"), cols("_max"), frame["lyapunov_max"].to_numpy(),
                              frame["flow_log_ratio"].to_numpy(), frame["blowup"].to_numpy(),
                              np.ones(len(frame), dtype=bool), cols("_final"), params[frame["point"].to_numpy()])
    frame["regime"], frame["attractor"] = regime.astype(str), attractor.astype(str)
    return frame


def solve_rows(params: np.ndarray, u0: np.ndarray) -> dict[str, np.ndarray]:
    """Integrate and label rows by the reference settings; one column dict (no I/O)."""
    m = get_model(MODEL)
    cfg = reference_solver()
    t0, t1 = cfg.t_span
    rhs = _scalar_rhs()
    raws = [solve_scipy(rhs, u0[i:i + 1], params[i:i + 1], t0, t1, method=cfg.method, rtol=cfg.rtol, atol=cfg.atol,
                        window_start=t1 - cfg.window * (t1 - t0), blowup_bound=cfg.blowup_bound,
                        lyapunov=cfg.lyapunov, twin_separation=cfg.twin_separation,
                        renorm_interval=cfg.renorm_interval) for i in range(params.shape[0])]
    cat = {k: np.concatenate([getattr(r, k) for r in raws]) for k in
           ("u_final", "u_min", "u_max", "blowup", "t_blowup", "finished", "lyapunov_max", "flow_log_ratio",
            "n_steps")}
    regime, attractor = label(cat["u_min"], cat["u_max"], cat["lyapunov_max"], cat["flow_log_ratio"],
                              cat["blowup"], cat["finished"], cat["u_final"], params)
    cols = {"gamma": params[:, m.param_names.index("gamma")], "Lambda_0": u0[:, m.state_names.index("Lambda")]}
    for j, s in enumerate(m.state_names):
        cols[f"{s}_final"] = cat["u_final"][:, j]
        cols[f"{s}_min"] = cat["u_min"][:, j]
        cols[f"{s}_max"] = cat["u_max"][:, j]
    cols.update(amplitude=relative_amplitude(cat["u_min"], cat["u_max"]), lyapunov_max=cat["lyapunov_max"],
                flow_log_ratio=cat["flow_log_ratio"], blowup=cat["blowup"], t_blowup=cat["t_blowup"],
                n_steps=cat["n_steps"], regime=regime.astype(str), attractor=attractor.astype(str))
    return cols


def _work(bounds: tuple[int, int]) -> dict[str, np.ndarray]:
    params, u0 = points()
    return solve_rows(params[bounds[0]:bounds[1]], u0[bounds[0]:bounds[1]])


def build(processes: int) -> pd.DataFrame:
    """All N_POINTS rows, computed in small slices over a process pool (chaotic rows are slow)."""
    slices = [(a, min(a + SLICE, N_POINTS)) for a in range(0, N_POINTS, SLICE)]
    with mp.Pool(processes) as pool:
        parts = []
        for k, cols in enumerate(pool.imap(_work, slices)):
            parts.append(pd.DataFrame(cols))
            print(f"{min((k + 1) * SLICE, N_POINTS)}/{N_POINTS}", flush=True)
    frame = pd.concat(parts, ignore_index=True)
    frame.insert(0, "point", np.arange(N_POINTS))
    return frame


def main(argv: list[str] | None = None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from actors.common.storage import atomic_write_parquet

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=mp.cpu_count())
    ap.add_argument("--rows", default=None, help="a:b -> compute and print those rows only")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--relabel", action="store_true", help="re-apply the regime rule to --out in place")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    if args.relabel:
        frame = relabel(Path(args.out))
        old = pd.read_parquet(args.out)
        print(f"{int((frame['attractor'] != old['attractor']).sum())} labels changed")
        table = pa.Table.from_pandas(frame, preserve_index=False)
        atomic_write_parquet(Path(args.out), table.replace_schema_metadata(pq.read_schema(args.out).metadata))
        return 0
    if args.rows:
        a, b = (int(x) for x in args.rows.split(":"))
        params, u0 = points()
        print(pd.DataFrame(solve_rows(params[a:b], u0[a:b])).to_string())
        print(f"{time.perf_counter() - t:.1f} s")
        return 0
    frame = build(args.processes)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {b"generator": b"tests/data/make_gaslit_reference.py", b"seed": str(SEED).encode(),
            b"horizon": repr(HORIZON).encode(), b"window": repr(WINDOW).encode(), b"rtol": repr(RTOL).encode(), b"atol": repr(ATOL).encode()}
    atomic_write_parquet(Path(args.out), table.replace_schema_metadata({**(table.schema.metadata or {}), **meta}))
    print(frame["regime"].value_counts().to_string())
    print(f"wrote {args.out} in {time.perf_counter() - t:.0f} s ({math.ceil(N_POINTS / SLICE)} slices, "
          f"{args.processes} processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
