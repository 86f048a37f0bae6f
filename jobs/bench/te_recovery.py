"""TE network recovery benchmark: planted sparse networks, bivariate vs multivariate TE, precision / recall.

    python -m jobs.bench.te_recovery --nodes 100 --T 10000 --out runs/te_recovery        # the issue's size (GPU)
    python -m jobs.bench.te_recovery --small --out runs/te_recovery_small                 # 8 nodes, T = 1000 (CPU, CI)
    python -m jobs.bench.te_recovery --systems linear --modes multivariate --out DIR       # one system, one mode
    python -m jobs.bench.te_recovery --nodes 100 --T 10000 --modes multivariate --out DIR  # the issue's target run

Systems (seeded, the same graph for both): every node i has 1-3 parents drawn uniformly from the other
nodes and its own lag-1 term;
  linear  x_i[t+1] = 0.2 x_i[t] + sum_j c_ij x_j[t] + e_i[t+1]           (VAR(1), spectral radius < 1)
  tanh    x_i[t+1] = 0.2 x_i[t] + sum_j c_ij tanh(1.5 x_j[t]) + e_i[t+1]
with |c_ij| = g U(0.4, 0.6) / sqrt(#parents of i), random sign, g = 1.25 (linear) or 1.75 (tanh: the
saturating coupling carries less information per unit of c), e ~ N(0, 1), 1000 steps of burn-in. At
100 nodes, T = 1e4 the weakest planted couplings of 8 sampled targets have a conditional TE (given the
target's past and its other parents) of 0.082 nats (linear) and 0.053 (tanh), non-parents -0.006..0.004
(actors.te.transfer_entropy, measured when the job was written).
Modes: bivariate (every ordered pair, max-statistic correction over all pairs, `--alpha-biv`) and
multivariate (greedy inclusion by max-statistic / pruning by min-statistic per target, `--alpha-mv`;
inclusion screened to the `--screen` (default 5) candidates with the largest linear score, re-screened in
every surrogate round so the test stays valid; `--screen 0` tests every candidate; a `phases:` line per
run gives setup / screen / include / prune seconds, KSG estimates and kernel launches);
both KSG k = 4, history 1, lag 1, `--surrogates` permutation surrogates, noise 1e-8. A significant edge
that is not planted is a false positive, split into *indirect* (a path s -> m -> t of length 2 in the truth)
and *spurious* (everything else: longer paths, reversed edges, shared ancestors, noise). Wall time is the
whole network call (embedding, every launch, the copy back); a warm-up on a small slice first compiles
the Triton kernels (its seconds are reported apart).

Runs in this process (no Ray): the engine's device paths when CUDA is present (`--backend auto`: the
batched Triton launches; multivariate: every target in lockstep, actors/te/multivariate_batched.py),
scipy's cKDTree otherwise. Writes DIR/te_recovery.md, DIR/te_recovery.json and DIR/te_recovery.png
(per system and mode the adjacency matrix: true positives, missed edges, indirect and spurious false
positives) with date, machine, versions and the command.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from jobs.bench.lib import gpu_name, md_table, module_versions, utc_stamp

SYSTEMS = ("linear", "tanh")
MODES = ("bivariate", "multivariate")


def planted_graph(n_vars: int, seed: int) -> list[np.ndarray]:
    """Parents of every node: 1-3 distinct other nodes, drawn uniformly (seeded)."""
    rng = np.random.default_rng([seed, 0])
    return [np.sort(rng.choice(np.delete(np.arange(n_vars), i), rng.integers(1, 4), replace=False))
            for i in range(n_vars)]


GAIN = {"linear": 1.25, "tanh": 1.75}
SELF = 0.2   # every node's own lag-1 coefficient


def coupling_matrix(parents: list[np.ndarray], seed: int, kind: str = "linear") -> np.ndarray:
    """C[i, j] = c_ij (target i, source j): |c| = GAIN[kind] U(0.4, 0.6) / sqrt(#parents), random sign (the
    same draws for both systems); the linear VAR scaled down until SELF I + C has spectral radius < 0.95
    (seed 0, 100 nodes: 0.89 as drawn, no scaling)."""
    rng = np.random.default_rng([seed, 1])
    n = len(parents)
    c = np.zeros((n, n))
    for i, pa in enumerate(parents):
        c[i, pa] = GAIN[kind] * rng.uniform(0.4, 0.6, pa.size) * rng.choice([-1.0, 1.0], pa.size) / np.sqrt(pa.size)
    while kind == "linear" and np.max(np.abs(np.linalg.eigvals(SELF * np.eye(n) + c))) >= 0.95:
        c *= 0.97
    return c


def simulate(parents: list[np.ndarray], length: int, kind: str, seed: int, burn: int = 1000) -> np.ndarray:
    """[T, N] series of the planted system `kind` (linear or tanh)."""
    c = coupling_matrix(parents, seed, kind)
    rng = np.random.default_rng([seed, 2, SYSTEMS.index(kind)])
    n = len(parents)
    e = rng.standard_normal((length + burn, n))
    x = np.zeros((length + burn, n))
    for t in range(length + burn - 1):
        drive = x[t] if kind == "linear" else np.tanh(1.5 * x[t])
        x[t + 1] = SELF * x[t] + c @ drive + e[t + 1]
    if not np.isfinite(x).all() or np.abs(x).max() > 1e6:
        raise RuntimeError(f"the {kind} system diverged")
    return x[burn:]


def true_edges(parents: list[np.ndarray]) -> set[tuple[int, int]]:
    return {(int(j), i) for i, pa in enumerate(parents) for j in pa}


def score(found: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict:
    """Precision, recall and the false positives split into indirect (length-2 path in the truth) and spurious."""
    children: dict[int, set[int]] = {}
    for s, t in truth:
        children.setdefault(s, set()).add(t)
    tp = found & truth
    fp = found - truth
    indirect = {(s, t) for s, t in fp if any(t in children.get(m, ()) for m in children.get(s, ()))}
    return {"true": len(truth), "found": len(found), "tp": len(tp), "fp": len(fp), "fn": len(truth - found),
            "fp_indirect": len(indirect), "fp_spurious": len(fp - indirect),
            "precision": len(tp) / len(found) if found else None, "recall": len(tp) / len(truth) if truth else None}


def network_config(mode: str, args: argparse.Namespace) -> dict:
    alpha = args.alpha_biv if mode == "bivariate" else args.alpha_mv
    n_surr = args.surrogates if mode == "bivariate" else (args.mv_surrogates or args.surrogates)
    return {"mode": mode, "correction": "max", "params": {"k": args.k, "k_hist": 1, "l_hist": 1, "delay": 1,
                                                          "backend": args.backend},
            "significance": {"n_surrogates": n_surr, "alpha": alpha, "seed": args.seed}}


def recover(data: np.ndarray, mode: str, cfg: dict, screen: int | None = None,
            stats: dict | None = None) -> tuple[set[tuple[int, int]], float]:
    """The significant edges of `mode` on `data` and the wall seconds of the network call (multivariate:
    `screen`, and per-phase KSG estimate counts / seconds into `stats`)."""
    from actors.te.multivariate import multivariate_network
    from actors.te.network import te_network

    sync()
    t0 = time.perf_counter()
    if mode == "bivariate":
        net = te_network(data, None, cfg)
    else:
        net = multivariate_network(data, None, cfg, screen=screen, stats=stats)
    sync()
    wall = time.perf_counter() - t0
    return {(int(s), int(t)) for s, t in net.graph.edges}, wall


def phase_line(stats: dict) -> str:
    """One line of per-phase seconds and KSG estimate counts (multivariate_network's `stats`)."""
    parts = [f"{ph} {stats[ph + '_s']:.1f} s" + (f" / {stats[ph + '_estimates']:,} est" if stats.get(ph + "_estimates")
                                                 else "")
             for ph in ("setup", "screen", "include", "prune") if ph + "_s" in stats]
    extra = [f"{k} {stats[k]}" for k in ("launches", "include_rounds") if k in stats]
    return "  phases: " + ", ".join(parts + extra)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def plot(results: list[dict], truth: set[tuple[int, int]], n_vars: int, path: Path, title: str) -> str | None:
    """Adjacency matrices (source column, target row) of every run; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
    except ImportError:
        return "matplotlib is not installed: no PNG"
    from actors.common.storage import atomic_write_figure

    systems = list(dict.fromkeys(r["system"] for r in results))
    modes = list(dict.fromkeys(r["mode"] for r in results))
    fig, axes = plt.subplots(len(systems), len(modes), figsize=(4.4 * len(modes), 4.4 * len(systems) + 0.8),
                             squeeze=False)
    cmap = ListedColormap(["white", "#2ca02c", "#bbbbbb", "#ff7f0e", "#d62728"])
    for res in results:
        ax = axes[systems.index(res["system"]), modes.index(res["mode"])]
        grid = np.zeros((n_vars, n_vars))
        found = {tuple(e) for e in res["edges"]}
        children: dict[int, set[int]] = {}
        for s, t in truth:
            children.setdefault(s, set()).add(t)
        for s, t in truth:
            grid[t, s] = 1 if (s, t) in found else 2
        for s, t in found - truth:
            grid[t, s] = 3 if any(t in children.get(m, ()) for m in children.get(s, ())) else 4
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=4, interpolation="nearest")
        p, r = res["precision"], res["recall"]
        ax.set_title(f"{res['system']} / {res['mode']}\nP {_pct(p)}  R {_pct(r)}  ({res['wall_s']:.1f} s)", fontsize=9)
        ax.set_xlabel("source")
        ax.set_ylabel("target")
    fig.suptitle(f"{title}\ngreen: found, grey: missed, orange: indirect FP, red: spurious FP", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / fig.get_figheight()), h_pad=2.0)
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)
    return None


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--T", type=int, default=10_000, help="samples per series")
    ap.add_argument("--surrogates", type=int, default=100)
    ap.add_argument("--mv-surrogates", type=int, default=None,
                    help="surrogates of the multivariate tests (default --surrogates); S + 1 sets its cost")
    ap.add_argument("--alpha-biv", type=float, default=0.05, help="bivariate max-statistic alpha")
    ap.add_argument("--alpha-mv", type=float, default=0.01,
                    help="multivariate alpha per target test (0.01: about 1 false positive per 100 targets)")
    ap.add_argument("--screen", type=int, default=5,
                    help="multivariate inclusion screened to the top M candidates by linear score, in the observed "
                         "round and in every surrogate round (actors/te/multivariate.py); 0 = every candidate")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--backend", default="auto", choices=["auto", "cpu", "torch", "triton"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=4, help="KSG neighbours (the Triton kernels keep k <= 16)")
    ap.add_argument("--small", action="store_true", help="CI size: 6 nodes, T = 600, 9 surrogates, alpha 0.1")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.small:
        args.nodes, args.T, args.surrogates, args.alpha_biv, args.alpha_mv = 6, 600, 9, 0.1, 0.1
    systems = [s for s in args.systems.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    bad = [s for s in systems if s not in SYSTEMS] + [m for m in modes if m not in MODES]
    if bad or args.nodes < 3 or args.T < 100 or args.surrogates < 1:
        ap.error(f"bad --systems/--modes {bad} or sizes (nodes >= 3, T >= 100, surrogates >= 1)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    parents = planted_graph(args.nodes, args.seed)
    truth = true_edges(parents)
    warm = 0.0
    if not args.no_warmup and gpu_name() != "none":   # compiles the Triton kernels for the shapes used (an untimed small run)
        t0 = time.perf_counter()
        small = simulate(parents, args.T, systems[0], args.seed)[:, : min(6, args.nodes)]
        for mode in modes:
            recover(small, mode, {**network_config(mode, args), "significance": {"n_surrogates": 4, "alpha": 0.5}},
                    screen=args.screen or None)
        warm = time.perf_counter() - t0
        print(f"warm-up {warm:.1f} s", flush=True)
    results = []
    for system in systems:
        data = simulate(parents, args.T, system, args.seed)
        for mode in modes:
            stats: dict = {}
            found, wall = recover(data, mode, network_config(mode, args), screen=args.screen or None, stats=stats)
            row = {"system": system, "mode": mode, **score(found, truth), "wall_s": round(wall, 3),
                   "edges": sorted(found), **({"phases": {k: round(v, 3) for k, v in stats.items()}} if stats else {})}
            results.append(row)
            print(f"{system:6s} {mode:12s} P {_pct(row['precision'])} R {_pct(row['recall'])} "
                  f"FP {row['fp']} (indirect {row['fp_indirect']}, spurious {row['fp_spurious']}) "
                  f"FN {row['fn']}  {wall:.1f} s", flush=True)
            if stats:
                print(phase_line(stats), flush=True)

    import torch

    from actors.common.storage import atomic_write_json, atomic_write_text

    env = {"date": utc_stamp(), "host": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "gpu": gpu_name(), "versions": {"python": platform.python_version(),
                                           **module_versions(["numpy", "scipy", "torch", "triton"])},
           "cuda": torch.version.cuda, "command": "python -m jobs.bench.te_recovery " + " ".join(sys.argv[1:]
                                                                                             if argv is None else argv)}
    settings = {"nodes": args.nodes, "T": args.T, "surrogates": args.surrogates,
                "surrogates_multivariate": args.mv_surrogates or args.surrogates, "alpha_bivariate": args.alpha_biv,
                "alpha_multivariate": args.alpha_mv, "screen": args.screen or None, "seed": args.seed, "backend": args.backend, "k": args.k,
                "history": 1, "lag": 1, "true_edges": len(truth), "warmup_s": round(warm, 3)}
    title = (f"TE recovery: {args.nodes} nodes, T = {args.T}, {len(truth)} planted edges, S = {args.surrogates} "
             f"({env['gpu'] if env['gpu'] != 'none' else 'CPU'}, {env['date']})")
    note = plot(results, truth, args.nodes, out / "te_recovery.png", title)
    rows = [[r["system"], r["mode"], r["true"], r["found"], r["tp"], f"{r['fp']} ({r['fp_indirect']} / {r['fp_spurious']})",
             r["fn"], _pct(r["precision"]), _pct(r["recall"]), f"{r['wall_s']:.1f}"] for r in results]
    md = "\n".join([
        f"# {title}", "",
        md_table(["system", "mode", "true", "found", "TP", "FP (indirect / spurious)", "FN", "precision", "recall",
                  "wall s"], rows), "",
        f"- settings: {settings}",
        f"- date {env['date']}, host {env['host']} ({env['machine']}, {env['cpus']} CPUs), GPU {env['gpu']}, "
        f"CUDA {env['cuda']}, versions {env['versions']}",
        f"- command: `{env['command']}`",
        "- FP indirect: a path s -> m -> t of length 2 in the planted graph; spurious: any other unplanted edge.",
        *([f"- {note}"] if note else []), ""])
    atomic_write_text(out / "te_recovery.md", md)
    atomic_write_json(out / "te_recovery.json", {**env, "settings": settings, "results": results,
                                                 "truth": sorted(truth)})
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
