"""Batch assignment: parallel tempering vs simulated annealing at equal energy evaluations, both
against the exact optimum of scipy.optimize.milp; optional CUDA throughput of the batched ladder.

    python -m jobs.bench.router_ladder --out runs/router_ladder                 # 16 instances, N=40, K=5
    python -m jobs.bench.router_ladder --n 60 --k 6 --steps 400,800,1600,3200 --out DIR
    python -m jobs.bench.router_ladder --devices cpu,cuda --out DIR             # adds the GPU rows

Every number comes from this run. For each instance (random_assignment(n, k, seed), seeds
0..instances-1) and each step count S, PT runs n_ladders x n_replicas chains for S steps (one
proposal per chain per step) and SA runs the same number of independent chains for S steps with
exponential cooling from T_max to T_min: the same number of energy evaluations (proposals). The
gap is (best feasible objective - MILP optimum) / |optimum|. Rows give the mean and max gap, the share
of instances within 1% of the optimum, the share of instances where PT is strictly better / worse than
SA, and wall times. Writes DIR/router_ladder.md and DIR/router_ladder.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from actors.common.storage import atomic_write_json, atomic_write_text
from actors.router.ladder import LadderConfig, anneal_assignment, solve_assignment
from actors.router.problems import assignment_milp, random_assignment
from jobs.bench.lib import gpu_name, md_table, utc_stamp


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--instances", type=int, default=16)
    ap.add_argument("--slack", type=float, default=1.15, help="capacity per engine = ceil(slack N / K)")
    ap.add_argument("--budget-level", type=float, default=0.5, help="0: cheapest feasible spend .. 1: unconstrained")
    ap.add_argument("--steps", default="400,800,1600,3200")
    ap.add_argument("--replicas", type=int, default=16)
    ap.add_argument("--ladders", type=int, default=8)
    ap.add_argument("--t-min", type=float, default=0.005)
    ap.add_argument("--t-max", type=float, default=0.5)
    ap.add_argument("--devices", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (small batches: 1 is fastest)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    insts, opts, milp_s = [], [], []
    for s in range(args.instances):
        inst = random_assignment(args.n, args.k, s, slack=args.slack, budget_level=args.budget_level)
        t = time.perf_counter()
        opt, _ = assignment_milp(inst)
        milp_s.append(time.perf_counter() - t)
        insts.append(inst)
        opts.append(opt)
    rows, records = [], []
    for device in args.devices.split(","):
        for S in [int(x) for x in args.steps.split(",")]:
            gp, gs, tp, ts = [], [], [], []
            for s, (inst, opt) in enumerate(zip(insts, opts)):
                cfg = LadderConfig(n_replicas=args.replicas, T_min=args.t_min, T_max=args.t_max, n_ladders=args.ladders,
                                   n_sweeps=S, burn_in=S // 5, adapt_every=max(S // 20, 5), record="none", seed=s,
                                   device=device)
                pt = solve_assignment(inst, cfg)
                sa = anneal_assignment(inst, n_chains=args.replicas * args.ladders, n_sweeps=S, T0=args.t_max,
                                       T_end=args.t_min, seed=s, device=device)
                assert pt.energy_evals == sa.energy_evals
                gp.append((pt.objective - opt) / abs(opt))
                gs.append((sa.objective - opt) / abs(opt))
                tp.append(pt.wall_seconds)
                ts.append(sa.wall_seconds)
            gp, gs = np.array(gp), np.array(gs)
            rec = {"device": device, "steps": S, "energy_evals": pt.energy_evals,
                   "pt_mean_gap": float(gp.mean()), "pt_max_gap": float(gp.max()), "pt_within_1pct": float(np.mean(gp <= 0.01)),
                   "sa_mean_gap": float(gs.mean()), "sa_max_gap": float(gs.max()), "sa_within_1pct": float(np.mean(gs <= 0.01)),
                   "pt_better": float(np.mean(gp < gs - 1e-12)), "pt_worse": float(np.mean(gp > gs + 1e-12)),
                   "pt_seconds": float(np.mean(tp)), "sa_seconds": float(np.mean(ts)),
                   "pt_gaps": gp.tolist(), "sa_gaps": gs.tolist()}
            records.append(rec)
            rows.append([device, S, pt.energy_evals, f"{gp.mean():.3%}", f"{gp.max():.3%}", f"{np.mean(gp <= 0.01):.2f}",
                         f"{gs.mean():.3%}", f"{gs.max():.3%}", f"{np.mean(gs <= 0.01):.2f}",
                         f"{rec['pt_better']:.2f} / {rec['pt_worse']:.2f}", f"{np.mean(tp):.2f}", f"{np.mean(ts):.2f}"])
            print(md_table(["device", "steps", "evals", "PT mean gap", "PT max", "PT <=1%", "SA mean gap", "SA max",
                            "SA <=1%", "PT better / worse", "PT s", "SA s"], rows[-1:]), flush=True)
    env = {"date": utc_stamp(), "machine": platform.node(), "cpu": platform.processor() or platform.machine(),
           "gpu": gpu_name(), "torch": torch.__version__, "threads": args.threads,
           "command": "python -m jobs.bench.router_ladder " + " ".join(argv or [])}
    table = md_table(["device", "steps", "evals", "PT mean gap", "PT max", "PT <=1%", "SA mean gap", "SA max", "SA <=1%",
                      "PT better / worse", "PT s", "SA s"], rows)
    head = (f"Batch assignment N={args.n}, K={args.k}, {args.instances} instances (slack {args.slack}, budget level "
            f"{args.budget_level}); PT {args.ladders} ladders x "
            f"{args.replicas} replicas, T {args.t_min}..{args.t_max}; SA the same number of chains; MILP mean "
            f"{np.mean(milp_s):.3f} s per instance.\n\n")
    atomic_write_text(out / "router_ladder.md", head + table + "\n\n" + json.dumps(env) + "\n")
    atomic_write_json(out / "router_ladder.json", {"env": env, "args": vars(args), "milp_seconds": milp_s,
                                                   "optima": opts, "rows": records})
    print(head + table)


if __name__ == "__main__":
    main()
