"""Continuation job: equilibrium branches of a model in one parameter, with folds, branch points, Hopf points.

    python -m jobs.continuation --config configs/continuation/lorenz_rho.yaml --out runs/cont_lorenz
    ray job submit --working-dir . -- python -m jobs.continuation --config configs/continuation/X.yaml --out DIR

Writes DIR/branches.parquet (one row per continuation point: branch, label, parameter, states,
max_real_eig, stable), DIR/special_points.json, DIR/continuation.png and DIR/summary.json. The work
is a few hundred small dense solves, so it runs in the job's own process (no actors, no GPU).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from actors.common.errors import InputError
from actors.sweep.continuation import Branch, ContinuationSpec, continue_equilibria
from jobs import cli

MARKERS = {"fold": ("s", "#d62728"), "branch_point": ("D", "#9467bd"), "hopf": ("o", "#ff7f0e")}


def load_spec(path: str | Path | None, overrides: dict | None = None) -> ContinuationSpec:
    """Read a continuation YAML, apply dotted overrides like {"settings.step_max": 0.1}, validate."""
    return cli.load_spec(ContinuationSpec, path, overrides)


def branches_table(branches: list[Branch], labels: list[str]) -> pd.DataFrame:
    """All branches in one long table (a `branch` index and its label per row)."""
    frames = []
    for i, (b, label) in enumerate(zip(branches, labels)):
        t = b.table()
        t.insert(0, "branch", i)
        t.insert(1, "label", label)
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def plot_branches(ax, branches: list[Branch], state: str, *, label_points: bool = True) -> None:
    """Branches on `ax`: stable solid, unstable dashed; folds, branch points and Hopf points marked."""
    import numpy as np

    shown = set()
    for b in branches:
        col = b.state_names.index(state)
        # the polyline with each located point inserted twice (old and new stability), so the line
        # style changes exactly at the Hopf / fold / branch point, not at the next continuation point
        xs, ys, st = [], [], []
        for i in range(len(b.param)):
            for sp_ in (p for p in b.special if p.index == i and i > 0):
                for flag in (b.stable[i - 1], b.stable[i]):
                    xs.append(sp_.param)
                    ys.append(sp_.state[col])
                    st.append(flag)
            xs.append(b.param[i])
            ys.append(b.states[i, col])
            st.append(b.stable[i])
        xs, ys, st = np.array(xs), np.array(ys), np.array(st)
        cuts = np.flatnonzero(st[1:] != st[:-1]) + 1
        for seg in np.split(np.arange(len(xs)), cuts):
            if len(seg) == 0:
                continue
            seg = np.append(seg, seg[-1] + 1) if seg[-1] + 1 < len(xs) else seg  # join the pieces
            ax.plot(xs[seg], ys[seg], "-" if st[seg[0]] else "--", color="k", lw=1.4)
        for sp_ in b.special:
            marker, color = MARKERS.get(sp_.kind, ("x", "k"))
            ax.plot(sp_.param, sp_.state[b.state_names.index(state)], marker, color=color, ms=7, zorder=5,
                    label=sp_.kind if (label_points and sp_.kind not in shown) else None)
            shown.add(sp_.kind)
            if label_points:
                ax.annotate(f"{sp_.param:.4f}", (sp_.param, sp_.state[b.state_names.index(state)]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)


def render(spec: ContinuationSpec, branches: list[Branch], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    state = spec.plot_state or branches[0].state_names[0]
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    plot_branches(ax, branches, state)
    ax.plot([], [], "-", color="k", label="stable")
    ax.plot([], [], "--", color="k", label="unstable")
    ax.set_xlabel(spec.parameter)
    ax.set_ylabel(state)
    ax.set_xlim(*spec.bounds)
    ax.set_title(f"{spec.model}: equilibria vs {spec.parameter} ({spec.name})")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def run(spec: ContinuationSpec, out_dir: Path) -> dict:
    """Continue every branch, write the outputs atomically, return the summary."""
    from actors.common.storage import atomic_write_json, atomic_write_parquet

    t0 = time.perf_counter()
    if spec.plot_state is not None:
        from actors.sweep.models import get_model

        names = get_model(spec.model).state_names
        if spec.plot_state not in names:
            raise InputError("plot_state", f"{spec.plot_state!r} is not a state", ", ".join(names))
    branches = continue_equilibria(spec)
    labels = [s.label or f"branch {i}" for i, s in enumerate(spec.branches)]
    special = [dict(sp_.as_dict(b.state_names), branch=i, label=labels[i])
               for i, b in enumerate(branches) for sp_ in b.special]
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(out_dir / "branches.parquet", branches_table(branches, labels))
    atomic_write_json(out_dir / "special_points.json", special)
    render(spec, branches, out_dir / "continuation.png")
    summary = {"name": spec.name, "model": spec.model, "parameter": spec.parameter, "out_dir": str(out_dir),
               "branches": [{"label": lab, "points": len(b.param), "stop_reason": b.stop_reason,
                             "param_range": [float(b.param.min()), float(b.param.max())]}
                            for lab, b in zip(labels, branches)],
               "special_points": [{k: s[k] for k in ("kind", "param", "frequency", "branch")} for s in special],
               "wall_seconds": round(time.perf_counter() - t0, 3)}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="continuation YAML (configs/continuation/*.yaml)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override config fields, e.g. bounds=[0,40] settings.step_max=0.1")
    args = ap.parse_args(argv)
    try:
        spec = load_spec(args.config, cli.parse_set(args.set))
        summary = run(spec, Path(args.out))
    except (InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
