"""Pictures people look at: the regime map (two swept axes coloured by attractor) and λ_max."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

COLORS = {
    "healthy": "#2ca02c", "fixed_point": "#2ca02c", "collapsed": "#8c564b", "limit_cycle": "#1f77b4",
    "oscillatory": "#9467bd", "chaotic": "#ff7f0e", "blow_up": "#111111", "unresolved": "#dddddd",
}


def _grid(table: pd.DataFrame, x: str, y: str, value: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pivot = table.pivot_table(index=y, columns=x, values=value, aggfunc="first")
    return pivot.columns.to_numpy(), pivot.index.to_numpy(), pivot.to_numpy()


def regime_map(table: pd.DataFrame, x: str, y: str, path: Path, *, title: str = "", label: str = "attractor",
               xlabel: str | None = None, ylabel: str | None = None) -> Path:
    """Two panels: attractor class over (x, y) and the largest Lyapunov exponent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
