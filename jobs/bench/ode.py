"""Benchmark job: generated per-trajectory Triton ODE kernels against the library paths.

    python -m jobs.bench.ode --out runs/ode_bench              # on the GPU machine
    python -m jobs.bench.ode --out runs/ode_bench --quick      # small sizes, a smoke run

Trajectory-steps/s = (sum of accepted steps over all trajectories) / wall time of the integration
(device synchronised; kernel generation and compilation excluded by a warm-up at small N). Problems
(identical for every implementation):
- Lorenz: sigma=10, beta=8/3, rho = linspace(0, 21, N) (GPUODEBenchmarks' setup), u0=(1,0,0),
  t in [0,1]; fixed step: 1000 RK4 steps (dt=1e-3); adaptive: rtol 1e-6 / atol 1e-8 (FP32),
  1e-8 / 1e-10 (FP64).
- GASLIT-AF: gamma = linspace(0, 0.7, N), Lambda(0) = linspace(0, 10, N) shuffled (no blow-ups there:
  batch-step peers such as torchdiffeq cannot step past one),
  other parameters at their defaults; fixed: 1000 RK4 steps on [0, 10]; adaptive on [0, 100].
Baselines run where importable: batched torch eager RK4, kernels/ode/dopri5.py (eager),
torchdiffeq (rk4 fixed / dopri5 adaptive, one step size per batch), diffrax Tsit5 under jax.vmap,
scipy solve_ivp per trajectory on one CPU core (timed on a sample, extrapolated: said so).
Writes OUT/ode_bench.md and OUT/ode_bench.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from jobs.bench.lib import best_time, gpu_name, md_table, module_versions, utc_stamp

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX must not grab the GPU up front

LORENZ_STEPS, GASLIT_STEPS = 1000, 1000
TOL = {"float32": (1e-6, 1e-8), "float64": (1e-8, 1e-10)}


def problem(name: str, n: int) -> tuple[object, np.ndarray, np.ndarray, tuple, tuple]:
    """(model, params [n, m], u0 [n, k], fixed-step t_span, adaptive t_span) for a benchmark size."""
    from actors.sweep.models import get_model

    m = get_model(name)
    p = np.tile(m.default_params, (n, 1))
    u0 = np.tile(m.default_state, (n, 1))
    if name == "lorenz":
        p[:, m.param_names.index("rho")] = np.linspace(0.0, 21.0, n)
        u0[:] = (1.0, 0.0, 0.0)
        return m, p, u0, (0.0, 1.0), (0.0, 1.0)
    p[:, m.param_names.index("gamma")] = np.linspace(0.0, 0.7, n)  # above ~0.71 some blow up: peers stop
    u0[:, m.state_names.index("Lambda")] = np.linspace(0.0, 10.0, n)[np.random.default_rng(0).permutation(n)]
    return m, p, u0, (0.0, 10.0), (0.0, 100.0)


# ---- ours ----------------------------------------------------------------------------------------
def run_ours(name, n, method, dtype, *, compact=True, chunk_steps=None, features=True, repeats=1, block=128,
             t_eval: int = 0, section: str | None = None):
    """t_eval: that many evenly spaced output times (dense output); section: a state name, crossing 0.5 both ways."""
    from kernels.ode.triton_solvers import Section, prepare

    m, p, u0, span_fixed, span_adapt = problem(name, n)
    if method == "rk4":
        kw = dict(n_steps=LORENZ_STEPS if name == "lorenz" else GASLIT_STEPS)
        span = span_fixed
    else:
        rtol, atol = TOL[dtype]
        kw = dict(rtol=rtol, atol=atol)
        span = span_adapt
    best, st = float("inf"), None
    for _ in range(repeats):  # fresh state each time: the kernels advance it in place
        run = prepare(m, p, u0, span, method=method, dtype=dtype, device="cuda", features=features,
                      chunk_steps=chunk_steps, block=block, t_eval=np.linspace(*span, t_eval) if t_eval else None,
                      section=Section(section, 0.5, 0) if section else None, **kw)
        wall, st = best_time(lambda run=run: run(compact=compact))
        best = min(best, wall)
    steps = int(st.nacc.sum())
    extra = {"launches": st.launches, "blown_up": int((st.status >= 2).sum())}
    if t_eval:
        extra["note"] = f"+ dense output at {t_eval} times"
    if section:
        extra["note"] = f"+ section {section} = 0.5 (mean {st.ncross.double().mean().item():.2f} crossings)"
    return best, steps, extra


# ---- stiff problems: Rosenbrock23 against Tsit5 and scipy's implicit solvers ----------------------
STIFF_TOL = (1e-6, 1e-8)


def stiff_problem(name: str, n: int):
    """Van der Pol mu in [500, 1500] on [0, 3000] (~2 relaxation periods); Robertson k1 in [0.02, 0.08] on [0, 1e4]."""
    from actors.sweep.models import get_model

    m = get_model(name)
    p = np.tile(m.default_params, (n, 1))
    p[:, 0] = np.linspace(500.0, 1500.0, n) if name == "van_der_pol" else np.linspace(0.02, 0.08, n)
    return m, p, np.tile(m.default_state, (n, 1)), (0.0, 3000.0 if name == "van_der_pol" else 1e4)


def run_stiff(name, n, method, dtype, max_steps: int = 10**6):
    from kernels.ode.triton_solvers import prepare

    m, p, u0, span = stiff_problem(name, n)
    kw = dict(method=method, dtype=dtype, rtol=STIFF_TOL[0], atol=STIFF_TOL[1], device="cuda", features=False,
              max_steps=max_steps)
    prepare(m, p[:2], u0[:2], (0.0, 1e-3), **kw)()  # compile (not timed)
    run = prepare(m, p, u0, span, **kw)
    wall, st = best_time(run)
    nacc, status = st.nacc.double(), st.status
    share = {k: (status == v).double().mean().item() for k, v in (("reached t1", 1), ("stalled (h < hmin)", 3))}
    note = (f"{nacc.mean().item():.4g} accepted + {st.nrej.double().mean().item():.3g} rejected steps/traj; "
            + ", ".join(f"{v:.1%} {k}" for k, v in share.items())
            + f", mean t reached {st.t.double().mean().item():.4g} of {span[1]:g}")
    return wall, int(nacc.sum().item()), {"note": note + (f" (cap {max_steps:,} steps)" if method == "tsit5" else "")}


def run_stiff_scipy(name, n, method, sample: int = 2):
    from scipy.integrate import solve_ivp

    m, p, u0, span = stiff_problem(name, n)
    pick = np.linspace(0, n - 1, min(sample, n)).astype(int)
    steps, t = 0, time.perf_counter()
    for i in pick:
        sol = solve_ivp(lambda t, y, i=i: m.rhs_numpy(y, p[i]), span, u0[i], method=method, rtol=STIFF_TOL[0],
                        atol=STIFF_TOL[1], jac=lambda t, y, i=i: _jac(m)(y, p[i]))
        steps += sol.t.size - 1
    per = (time.perf_counter() - t) / pick.size
    return per * n, int(steps / pick.size * n), {"note": f"{method} with the symbolic Jacobian, rtol {STIFF_TOL[0]:g}, "
                                                         f"1 core, extrapolated from {pick.size}"}


def _jac(m):
    from actors.sweep.jacobian import derivatives

    return derivatives(m).jac_numpy


# ---- baselines -----------------------------------------------------------------------------------
def run_torch_rk4(name, n, dtype):
    import torch

    m, p, u0, (t0, t1), _ = problem(name, n)
    tdt = torch.float64 if dtype == "float64" else torch.float32
    same = np.all(p == p[:1], axis=0)
    fixed = {k: float(p[0, j]) for j, k in enumerate(m.param_names) if same[j]}
    rhs = m.specialized_rhs_torch(fixed)
    pf = torch.as_tensor(p[:, m.free_param_columns(fixed)], dtype=tdt, device="cuda")
    u = torch.as_tensor(u0, dtype=tdt, device="cuda")
    steps = LORENZ_STEPS if name == "lorenz" else GASLIT_STEPS
    h = (t1 - t0) / steps

    def go():
        x = u.clone()
        with torch.no_grad():
            for _ in range(steps):
                k1 = rhs(x, pf)
                k2 = rhs(x + 0.5 * h * k1, pf)
                k3 = rhs(x + 0.5 * h * k2, pf)
                k4 = rhs(x + h * k3, pf)
                x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        return x

    wall, _ = best_time(go)
    return wall, n * steps, {}


def run_dopri5(name, n, dtype):
    import torch

    from kernels.ode.dopri5 import solve_dopri5

    m, p, u0, _, (t0, t1) = problem(name, n)
    tdt = torch.float64 if dtype == "float64" else torch.float32
    same = np.all(p == p[:1], axis=0)
    fixed = {k: float(p[0, j]) for j, k in enumerate(m.param_names) if same[j]}
    rhs = m.specialized_rhs_torch(fixed)
    pf = torch.as_tensor(p[:, m.free_param_columns(fixed)], dtype=tdt, device="cuda")
    rtol, atol = TOL[dtype]
    wall, r = best_time(lambda: solve_dopri5(rhs, torch.as_tensor(u0, dtype=tdt, device="cuda"), pf, t0, t1,
                                             rtol=rtol, atol=atol, window_start=t1, blowup_bound=1e4, lyapunov=False,
                                             twin_separation=1e-7, compile=False))
    return wall, int(r.n_steps.sum()), {"note": "eager (torch.compile off)"}


def run_torchdiffeq(name, n, method, dtype):
    import torch
    import torchdiffeq

    m, p, u0, span_fixed, span_adapt = problem(name, n)
    tdt = torch.float64 if dtype == "float64" else torch.float32
    same = np.all(p == p[:1], axis=0)
    fixed = {k: float(p[0, j]) for j, k in enumerate(m.param_names) if same[j]}
    rhs = m.specialized_rhs_torch(fixed)
    pf = torch.as_tensor(p[:, m.free_param_columns(fixed)], dtype=tdt, device="cuda")
    counter = {"nfe": 0}

    def f(t, x):
        counter["nfe"] += 1
        return rhs(x, pf)

    y0 = torch.as_tensor(u0, dtype=tdt, device="cuda")
    if method == "rk4":
        steps = LORENZ_STEPS if name == "lorenz" else GASLIT_STEPS
        t0, t1 = span_fixed
        ts = torch.tensor([t0, t1], dtype=tdt, device="cuda")
        with torch.no_grad():
            wall, _ = best_time(lambda: torchdiffeq.odeint(f, y0, ts, method="rk4",
                                                           options={"step_size": (t1 - t0) / steps}))
        return wall, n * steps, {}
    t0, t1 = span_adapt
    rtol, atol = TOL[dtype]
    ts = torch.tensor([t0, t1], dtype=tdt, device="cuda")
    counter["nfe"] = 0
    with torch.no_grad():
        wall, _ = best_time(lambda: torchdiffeq.odeint(f, y0, ts, method="dopri5", rtol=rtol, atol=atol))
    steps = max(counter["nfe"] // 6, 1)  # ~6 evaluations per (accepted or rejected) dopri5 step
    return wall, n * steps, {"note": "one step size for the whole batch; steps = nfe/6"}


def run_diffrax(name, n, method, dtype):
    import diffrax
    import jax
    import jax.numpy as jnp

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    m, p, u0, span_fixed, span_adapt = problem(name, n)
    same = np.all(p == p[:1], axis=0)
    fixed = {k: float(p[0, j]) for j, k in enumerate(m.param_names) if same[j]}
    import sympy as sp

    free = [s for s in m.param_symbols if s.name not in fixed]
    exprs = [e.subs({sp.Symbol(k): v for k, v in fixed.items()}) for e in m.equations]
    f_np = sp.lambdify((m.state_symbols, free), exprs, modules="jax")
    jdt = jnp.float64 if dtype == "float64" else jnp.float32

    def vf(t, y, args):
        return jnp.stack([jnp.broadcast_to(c, ()) for c in f_np(list(y), list(args))])

    term = diffrax.ODETerm(vf)
    solver = diffrax.Tsit5()
    if method == "rk4":   # diffrax has no classical RK4: fixed-step Tsit5 with the same step count
        t0, t1 = span_fixed
        steps = LORENZ_STEPS if name == "lorenz" else GASLIT_STEPS
        ctrl, dt0, max_steps = diffrax.ConstantStepSize(), (t1 - t0) / steps, steps + 1
    else:
        t0, t1 = span_adapt
        rtol, atol = TOL[dtype]
        ctrl, dt0, max_steps = diffrax.PIDController(rtol=rtol, atol=atol), None, 100_000

    def one(y0, args):
        sol = diffrax.diffeqsolve(term, solver, t0, t1, dt0, y0, args=args, stepsize_controller=ctrl,
                                  max_steps=max_steps, saveat=diffrax.SaveAt(t1=True),
                                  throw=False)
        return sol.ys[-1], sol.stats["num_accepted_steps"]

    fn = jax.jit(jax.vmap(one))
    y0 = jnp.asarray(u0, dtype=jdt)
    args = jnp.asarray(p[:, m.free_param_columns(fixed)], dtype=jdt)
    jax.block_until_ready(fn(y0, args))  # compile
    t = time.perf_counter()
    ys, acc = jax.block_until_ready(fn(y0, args))
    wall = time.perf_counter() - t
    return wall, int(np.asarray(acc).sum()), {"note": "fixed-step Tsit5 (no RK4 in diffrax)" if method == "rk4"
                                              else "Tsit5 + PIDController"}


def run_scipy(name, n, method, sample: int = 16):
    from scipy.integrate import solve_ivp

    m, p, u0, span_fixed, span_adapt = problem(name, n)
    pick = np.linspace(0, n - 1, min(sample, n)).astype(int)
    t0, t1 = span_adapt if method != "rk4" else span_fixed
    rtol, atol = TOL["float64"] if method != "rk4" else TOL["float32"]
    steps, t = 0, time.perf_counter()
    for i in pick:
        sol = solve_ivp(lambda t, y, i=i: m.rhs_numpy(y, p[i]), (t0, t1), u0[i], method="RK45", rtol=rtol, atol=atol)
        steps += sol.t.size - 1
    per = (time.perf_counter() - t) / pick.size
    return per * n, int(steps / pick.size * n), {"note": f"RK45 rtol {rtol:g}, 1 core, extrapolated from {pick.size}"}


# ---- driver --------------------------------------------------------------------------------------
def versions() -> dict:
    """Python, torch, every peer's version (or why it is missing) and the GPU: the table's header line."""
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            **module_versions(("triton", "torchdiffeq", "jax", "diffrax", "scipy", "numpy", "sympy")),
            "gpu": gpu_name()}


def build_plan(quick: bool, sizes: list[int]) -> list[tuple]:
    big = [s for s in sizes]
    mid = [s for s in sizes if s <= (10**4 if quick else 10**6)]
    small = [s for s in sizes if s <= (10**4 if quick else 10**5)]
    plan = []
    for model in ("lorenz", "gaslit_af"):
        for n in big:
            plan.append(("ours", model, n, "rk4", "float32", {"features": False}))
            plan.append(("ours", model, n, "tsit5", "float32", {}))
        for n in mid:
            plan.append(("ours", model, n, "rk4", "float64", {"features": False}))
            plan.append(("ours", model, n, "tsit5", "float64", {}))
        nl = max(mid)  # long tails: the same adaptive run without compaction (one launch)
        plan.append(("ours-no-compaction", model, nl, "tsit5", "float32", {"compact": False}))
        for n in mid:
            plan.append(("torch-eager-rk4", model, n, "rk4", "float32", {}))
            plan.append(("torchdiffeq", model, n, "rk4", "float32", {}))
        for n in small[-2:]:
            plan.append(("torchdiffeq", model, n, "tsit5", "float32", {}))
            plan.append(("dopri5-torch", model, n, "tsit5", "float32", {}))
        for n in small[-1:]:  # each size is a fresh XLA compilation: one size
            plan.append(("diffrax-vmap", model, n, "tsit5", "float32", {}))
            plan.append(("diffrax-vmap", model, n, "rk4", "float32", {}))
        plan.append(("scipy-1core", model, max(sizes), "tsit5", "float64", {}))
        plan.append(("scipy-1core", model, max(sizes), "rk4", "float64", {}))
    return plan


def tails_plan(n: int = 10**6) -> list[tuple]:
    """Long tails: the same adaptive FP32 runs with compaction every k steps, and with none."""
    plan = []
    for model in ("lorenz", "gaslit_af"):
        for chunk in (32, 128, 256, 1024):
            plan.append(("ours", model, n, "tsit5", "float32", {"chunk_steps": chunk}))
        plan.append(("ours-no-compaction", model, n, "tsit5", "float32", {}))
    return plan


def blocks_plan() -> list[tuple]:
    """Lanes per program (BLOCK; 4 warps each, so 256 = 2 trajectories per thread)."""
    return [("ours", "lorenz", 8388608, "rk4", "float32", {"features": False, "block": b}) for b in (64, 128, 256, 512)]


def modes_plan() -> list[tuple]:
    """Costs of the optional kernel modes (Lorenz Tsit5 FP32), and the stiff solver against Tsit5 / scipy."""
    plan = [("ours", "lorenz", 10**6, "tsit5", "float32", kw)
            for kw in ({}, {"t_eval": 100}, {"section": "x"})]
    for model in ("van_der_pol", "robertson"):
        plan += [("stiff", model, 10**4, "rosenbrock23", "float64", {}),
                 ("stiff", model, 10**4, "rosenbrock23", "float32", {}),
                 ("stiff", model, 10**4, "tsit5", "float64", {}),
                 ("stiff-scipy", model, 10**4, "Radau", "float64", {}),
                 ("stiff-scipy", model, 10**4, "BDF", "float64", {})]
    return plan


def execute(entry) -> tuple[float, int, dict]:
    impl, model, n, method, dtype, kw = entry
    if impl == "stiff":
        return run_stiff(model, n, method, dtype)
    if impl == "stiff-scipy":
        return run_stiff_scipy(model, n, method)
    if impl == "ours":
        wall, steps, extra = run_ours(model, n, method, dtype, repeats=3 if n <= 10**6 else 1, **kw)
        note = [f"compaction every {kw['chunk_steps']} steps"] if "chunk_steps" in kw else []
        note += [f"BLOCK={kw['block']}"] if "block" in kw else []
        note += [extra.pop("note")] if "note" in extra else []
        return wall, steps, {**extra, **({"note": "; ".join(note)} if note else {})}
    if impl == "ours-no-compaction":
        wall, steps, extra = run_ours(model, n, method, dtype, compact=False, chunk_steps=10**7, repeats=3)
        return wall, steps, {**extra, "note": "one launch, no compaction"}
    if impl == "torch-eager-rk4":
        return run_torch_rk4(model, n, dtype)
    if impl == "torchdiffeq":
        return run_torchdiffeq(model, n, method, dtype)
    if impl == "dopri5-torch":
        return run_dopri5(model, n, dtype)
    if impl == "diffrax-vmap":
        return run_diffrax(model, n, method, dtype)
    return run_scipy(model, n, method)


def ratios(rows: list[dict]) -> None:
    """Add 'ours / this' speedups: ours at the same model, N, fixed-vs-adaptive kind and FP32."""
    best = {(r["model"], r["N"], r["method"], r["dtype"]): r["traj_steps_per_s"]
            for r in rows if r["impl"] == "ours" and r.get("traj_steps_per_s")}
    for r in rows:
        if r["impl"] == "ours" or not r.get("traj_steps_per_s"):
            continue
        kind = "rk4" if r["method"] == "rk4" else "tsit5"
        n = r["N"] if (r["model"], r["N"], kind, "float32") in best else max(
            [k[1] for k in best if k[0] == r["model"] and k[2] == kind], default=None)
        ours = best.get((r["model"], n, kind, "float32"))
        if ours:
            r["ours_fp32_over_this"] = ours / r["traj_steps_per_s"]
            r["ratio_at_N"] = n


def markdown(rows: list[dict], meta: dict) -> str:
    """The results table, one line per row (errors and skipped rows included), under the run's versions."""
    head = (f"Run {meta['date']} on {meta['versions']['gpu']}; " +
            ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if k != "gpu") + "\n\n")
    cells = []
    for r in rows:
        key = [r["model"], r["impl"], r["method"], r["dtype"], f"{r['N']:,}"]
        if "error" in r:
            cells.append([*key, "–", "–", "–", "–", r["error"]])
            continue
        ratio = f"{r['ours_fp32_over_this']:.3g}× (N={r['ratio_at_N']:,})" if "ours_fp32_over_this" in r else ""
        note = r.get("note", "")
        if "launches" in r:
            note = f"{r['launches']} launches, {r['blown_up']} blew up" + (f"; {note}" if note else "")
        cells.append([*key, f"{r['wall_s']:.4g}", f"{r['steps']:.3g}", f"{r['traj_steps_per_s']:.3g}", ratio, note])
    return head + md_table(["model", "implementation", "method", "dtype", "N", "wall (s)", "traj-steps",
                            "traj-steps/s", "ours FP32 / this", "note"], cells) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/ode_bench")
    ap.add_argument("--sizes", default="1000,10000,100000,1000000,8388608")
    ap.add_argument("--quick", action="store_true", help="small sizes only (smoke run)")
    ap.add_argument("--only", default="", help="comma-separated implementations to run (default: all)")
    ap.add_argument("--models", default="", help="comma-separated models to run (default: all in the plan)")
    ap.add_argument("--plan", choices=("main", "tails", "blocks", "modes"), default="main")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip what is left after this many seconds")
    ap.add_argument("--merge", nargs="*", default=None,
                    help="only rebuild the markdown from these earlier logs (their JSON lines)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge is not None:
        rows, meta = [], None
        for log in args.merge:
            for line in Path(log).read_text().splitlines():
                if line.startswith("{"):
                    rec = json.loads(line)
                    if "versions" in rec:
                        meta = meta or rec
                    elif "impl" in rec:
                        rows.append(rec)
        ratios(rows)
        (out / "ode_bench.md").write_text(markdown(rows, meta))
        print(markdown(rows, meta))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("jobs.bench.ode needs a CUDA GPU (the generated kernels run interpreted on the CPU: far too slow)")
        return 2
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    if args.quick:
        sizes = [s for s in sizes if s <= 10**4] or sizes[:1]
    meta = {"date": utc_stamp(), "versions": versions()}
    print(json.dumps(meta), flush=True)
    only = set(filter(None, args.only.split(",")))
    models = set(filter(None, args.models.split(",")))
    plan = {"main": lambda: build_plan(args.quick, sizes), "tails": tails_plan, "blocks": blocks_plan,
            "modes": modes_plan}[args.plan]()
    plan = [e for e in plan if (not only or e[0] in only) and (not models or e[1] in models)]
    # warm-up: generate and compile every kernel of ours at a tiny size (not timed)
    for key in sorted({(e[1], e[3], e[4], bool(e[5].get("features", True)), e[5].get("block", 128))
                       for e in plan if e[0] == "ours"}):
        t = time.perf_counter()
        run_ours(key[0], 256, key[1], key[2], features=key[3], block=key[4])
        print(f"compiled {key} in {time.perf_counter() - t:.1f} s", flush=True)
    start = time.perf_counter()
    rows: list[dict] = []
    for entry in plan:
        impl, model, n, method, dtype, _ = entry
        row = {"impl": impl, "model": model, "N": n, "method": method, "dtype": dtype}
        if time.perf_counter() - start > args.budget_s:
            row["error"] = "skipped: time budget"
        else:
            try:
                wall, steps, extra = execute(entry)
                row.update(wall_s=wall, steps=steps, traj_steps_per_s=steps / wall, **extra)
            except Exception as exc:  # noqa: BLE001 - a missing or failing peer is reported, not fatal
                row["error"] = f"{type(exc).__name__}: {str(exc)[:120]}".replace("|", "/").replace("\n", " ")
        rows.append(row)
        print(json.dumps(row), flush=True)
        ratios(rows)  # written after every row: a run cut short still leaves its table
        (out / "ode_bench.md").write_text(markdown(rows, meta))
        (out / "ode_bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
