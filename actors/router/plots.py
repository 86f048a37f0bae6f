"""curve.png: quality vs share of strong-model calls per benchmark, the router and its ablations with
the random router, all-weak, all-strong and the oracle (the picture people look at). No Ray."""
from __future__ import annotations

from pathlib import Path

from actors.common.storage import atomic_write_figure

__all__ = ["curve_png"]

_STYLE = {"router": dict(color="#1f4e79", lw=2.2, marker="o", ms=4, zorder=5),
          "random": dict(color="#7f7f7f", lw=1.5, ls="--", marker=".", zorder=3),
          "oracle": dict(color="#2e7d32", lw=1.5, ls=":", marker="x", ms=4, zorder=3)}
_ABLATION_COLORS = {"energy_t0": "#c55a11", "thompson": "#8e44ad", "predictor": "#00838f"}


def curve_png(summary: dict, path: Path, *, title: str = "") -> Path:
    """One panel per benchmark of summary["benchmarks"] (evaluate.summarize); written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = summary["benchmarks"]
    fig, axes = plt.subplots(1, len(benches), figsize=(6.2 * len(benches), 4.8), squeeze=False)
    for ax, (name, b) in zip(axes[0], benches.items()):
        routers = b["routers"]
        for r, m in routers.items():
            xs = [100 * s for s, _ in m["curve"]]
            ys = [p for _, p in m["curve"]]
            style = _STYLE.get(r, dict(color=_ABLATION_COLORS.get(r, "#999999"), lw=1.1, marker=".", alpha=0.85))
            label = {"router": f"router (energy, T>0)  APGR {m['apgr']:.3f}",
                     "random": f"random  APGR {m['apgr']:.3f}", "oracle": f"oracle  APGR {m['apgr']:.3f}",
                     "energy_t0": f"T=0 argmin  APGR {m['apgr']:.3f}", "thompson": f"Thompson only  APGR {m['apgr']:.3f}",
                     "predictor": f"predictor only  APGR {m['apgr']:.3f}"}.get(r, f"{r}  APGR {m['apgr']:.3f}")
            ax.plot(xs, ys, label=label, **style)
        ax.axhline(b["all_weak"], color="#b71c1c", lw=1, ls="-.", label=f"all-weak {b['all_weak']:.2f}")
        ax.axhline(b["all_strong"], color="#0d47a1", lw=1, ls="-.", label=f"all-strong {b['all_strong']:.2f}")
        ax.axhline(b["quality_target_perf"], color="#555555", lw=0.8, ls=":",
                   label=f"95% of strong {b['quality_target_perf']:.2f}")
        ax.set_xlabel("strong-model calls (%)")
        ax.set_ylabel(b.get("unit", "performance"))
        ax.set_title(f"{name}: {b['n_routes']} routes, folds by {b.get('folds')}")
        ax.set_xlim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=120)
    plt.close(fig)
    return path
