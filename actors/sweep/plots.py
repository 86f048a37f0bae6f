"""Pictures people look at: regime maps, bifurcation diagrams, continuation branches, parameter fits.

Every figure is drawn headless (Agg) and written atomically (actors.common.storage.atomic_write_figure),
so a reader never sees half a PNG.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from actors.common.storage import atomic_write_figure
from actors.sweep.modelspec import model_label

if TYPE_CHECKING:
    from actors.sweep.bifurcation import BifurcationSpec
    from actors.sweep.config import SweepSpec
    from actors.sweep.continuation import Branch, ContinuationSpec

__all__ = ["COLORS", "MARKERS", "bifurcation_diagram", "continuation_figure", "fit_figure", "plot_branches",
           "regime_map", "sweep_regime_map"]

COLORS = {
    "healthy": "#2ca02c", "fixed_point": "#2ca02c", "collapsed": "#8c564b", "limit_cycle": "#1f77b4",
    "oscillatory": "#9467bd", "chaotic": "#ff7f0e", "blow_up": "#111111", "unresolved": "#dddddd",
}
MARKERS = {"fold": ("s", "#d62728"), "branch_point": ("D", "#9467bd"), "hopf": ("o", "#ff7f0e")}


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (jobs and actors have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write `fig` atomically to `path` and close it."""
    try:
        return atomic_write_figure(Path(path), fig, dpi=dpi)
    finally:
        _pyplot().close(fig)


def _grid(table: pd.DataFrame, x: str, y: str, value: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if x == y:   # a one-axis sweep: one strip over x (pivoting a column against itself fails)
        strip = table.groupby(x, sort=True)[value].first()
        return strip.index.to_numpy(), np.array([0.0]), strip.to_numpy(dtype=float)[None, :]
    pivot = table.pivot_table(index=y, columns=x, values=value, aggfunc="first")
    return pivot.columns.to_numpy(), pivot.index.to_numpy(), pivot.to_numpy()


def regime_map(table: pd.DataFrame, x: str, y: str, path: Path, *, title: str = "", label: str = "attractor",
               xlabel: str | None = None, ylabel: str | None = None) -> Path:
    """Two panels: attractor class over (x, y) and the largest Lyapunov exponent."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = _pyplot()
    names = [n for n in COLORS if n in set(table[label])] + sorted(set(table[label]) - set(COLORS))
    codes = table[label].map({n: i for i, n in enumerate(names)})
    xs, ys, grid = _grid(table.assign(_code=codes), x, y, "_code")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), constrained_layout=True)
    cmap = ListedColormap([COLORS.get(n, "#e377c2") for n in names])
    axes[0].pcolormesh(xs, ys, grid, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, shading="nearest")
    axes[0].legend(handles=[Patch(color=COLORS.get(n, "#e377c2"), label=f"{n} ({int((table[label] == n).sum())})")
                            for n in names], loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    axes[0].set_title(title or "regime map")
    _, _, lam = _grid(table, x, y, "lyapunov_max")
    lim = np.nanmax(np.abs(lam)) if np.isfinite(lam).any() else 1.0
    im = axes[1].pcolormesh(xs, ys, lam, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="nearest")
    fig.colorbar(im, ax=axes[1], label="largest Lyapunov exponent (blank: blow-up)")
    axes[1].set_title("finite-time λ_max")
    for ax in axes:
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(ylabel or y)
    return _save(fig, path)


def sweep_regime_map(spec: SweepSpec, out_dir: Path) -> Path:
    """DIR/regime_map.png of the first two axes (or spec.map_axes) from DIR/trajectories.parquet."""
    import pyarrow.parquet as pq

    from actors.sweep.engine import axis_columns

    cols = axis_columns(spec)
    names = [a.name for a in spec.axes]
    x, y = spec.map_axes or (names[0], names[1] if len(names) > 1 else names[0])
    xc, yc = cols[names.index(x)], cols[names.index(y)]
    # only the plotted columns, labels dictionary-encoded: a 10^7-point map stays a few hundred MB
    table = pq.read_table(Path(out_dir) / "trajectories.parquet",
                          columns=sorted({xc, yc, "attractor", "lyapunov_max"}), read_dictionary=["attractor"]
                          ).to_pandas()
    table["attractor"] = table["attractor"].astype(str)
    return regime_map(table, xc, yc, Path(out_dir) / "regime_map.png", title=f"{model_label(spec.model)}: {spec.name}",
                      xlabel=x, ylabel="" if x == y else f"{y}(0)" if yc.endswith("_0") else y)


def plot_branches(ax: Any, branches: Sequence[Branch], state: str, *, label_points: bool = True) -> None:
    """Branches on `ax`: stable solid, unstable dashed; folds, branch points and Hopf points marked."""
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
            ax.plot(sp_.param, sp_.state[col], marker, color=color, ms=7, zorder=5,
                    label=sp_.kind if (label_points and sp_.kind not in shown) else None)
            shown.add(sp_.kind)
            if label_points:
                ax.annotate(f"{sp_.param:.4f}", (sp_.param, sp_.state[col]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)


def continuation_figure(spec: ContinuationSpec, branches: Sequence[Branch], path: Path) -> Path:
    """Equilibrium branches of one continuation vs its parameter (DIR/continuation.png)."""
    plt = _pyplot()
    state = spec.plot_state or branches[0].state_names[0]
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    plot_branches(ax, branches, state)
    ax.plot([], [], "-", color="k", label="stable")
    ax.plot([], [], "--", color="k", label="unstable")
    ax.set_xlabel(spec.parameter)
    ax.set_ylabel(state)
    ax.set_xlim(*spec.bounds)
    ax.set_title(f"{model_label(spec.model)}: equilibria vs {spec.parameter} ({spec.name})")
    ax.legend(fontsize=8)
    return _save(fig, path)


def bifurcation_diagram(spec: BifurcationSpec, dots: pd.DataFrame, branches: Sequence[Branch], path: Path,
                        per_row: pd.DataFrame | None = None) -> Path:
    """Local maxima (and settled equilibria) vs the parameter, continuation branches overlaid, and a
    Lyapunov-exponent panel when the per-value rows carry λ columns (DIR/bifurcation.png)."""
    plt = _pyplot()
    state = dots.columns[1]
    lam_cols = [] if per_row is None else [c for c in per_row.columns if c.startswith("lambda_")]
    if lam_cols:
        fig, (ax, ax_l) = plt.subplots(2, 1, figsize=(9, 8), sharex=True, height_ratios=[2.2, 1],
                                       constrained_layout=True)
        for c in lam_cols:
            ax_l.plot(per_row[spec.parameter], per_row[c], lw=1, label=c.replace("lambda_", "λ"))
        ax_l.axhline(0, color="k", lw=0.6)
        ax_l.set_ylabel("Lyapunov exponents")
        ax_l.set_xlabel(spec.parameter)
        ax_l.legend(fontsize=8)
    else:
        fig, ax = plt.subplots(figsize=(9, 5.5), constrained_layout=True)
    mx = dots[dots["kind"] == "max"]
    eq = dots[dots["kind"] == "equilibrium"]
    # pixels for dense diagrams (the classic look), visible dots for small CPU presets
    ax.plot(mx[spec.parameter], mx[state], "," if spec.n > 300 else ".", ms=3, color="#1f77b4", alpha=0.7)
    ax.plot([], [], ".", color="#1f77b4", label=f"local maxima of {state} (final window)")
    ax.plot(eq[spec.parameter], eq[state], ".", color="#2ca02c", ms=3, label="settled on an equilibrium")
    if branches:
        plot_branches(ax, branches, state)
        ax.plot([], [], "-", color="k", label="equilibria, stable")
        ax.plot([], [], "--", color="k", label="equilibria, unstable")
    pad = 0.01 * (spec.hi - spec.lo)
    ax.set_xlim(spec.lo - pad, spec.hi + pad)
    ax.set_xlabel(spec.parameter)
    ax.set_ylabel(state)
    ax.set_title(f"{model_label(spec.model)}: bifurcation diagram ({spec.name})")
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path, dpi=120)


def fit_figure(path: Path, t: np.ndarray, observed: np.ndarray, dense: np.ndarray, planted: np.ndarray,
               fitted: np.ndarray, states: Sequence[str], title: str) -> Path:
    """Observed points against the fitted trajectory (and the planted one, dashed), one panel per state.

    observed [len(t), k]; planted and fitted [len(dense), k], columns in the order of `states`.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(len(states), 1, figsize=(10, 1.9 * len(states)), sharex=True, squeeze=False)
    for k, s in enumerate(states):
        ax = axes[k, 0]
        ax.plot(t, observed[:, k], ".", ms=3, color="0.45", label="observed")
        ax.plot(dense, planted[:, k], "--", lw=1.0, color="tab:green", label="planted")
        ax.plot(dense, fitted[:, k], "-", lw=1.0, color="tab:red", label="fitted")
        ax.set_ylabel(s)
    axes[0, 0].legend(loc="upper left", ncol=3, fontsize=8)
    axes[-1, 0].set_xlabel("t")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
