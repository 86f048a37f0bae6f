"""The loss-curve figure of a run (loss.png beside its metrics)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from actors.common.storage import atomic_write_figure

__all__ = ["write_loss_curve"]


def write_loss_curve(rows: list[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Loss (and learning rate, right axis) against the global step, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    try:
        ax.plot(steps, [r["loss"] for r in rows], lw=1.2, color="tab:blue", label="loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (mean over ranks)")
        if all(r["loss"] > 0 for r in rows) and max(r["loss"] for r in rows) > 20 * min(r["loss"] for r in rows):
            ax.set_yscale("log")
        lr_ax = ax.twinx()
        lr_ax.plot(steps, [r["lr"] for r in rows], lw=0.8, color="tab:gray", alpha=0.6, label="lr")
        lr_ax.set_ylabel("learning rate", color="tab:gray")
        ax.set_title(title or "training loss")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return atomic_write_figure(Path(path), fig)
    finally:
        plt.close(fig)
