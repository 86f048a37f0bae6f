"""Figures of the neuro datasets and evaluation (matplotlib, Agg; written atomically)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from actors.common.storage import atomic_write_figure
from actors.neuro.datasets import NeuroData

__all__ = ["dataset_preview", "metric_bars", "rate_examples"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dataset_preview(data: NeuroData, path: Path, trial: int = 0) -> Path:
    """Raster, true rates, latents and the first channels of each field for one trial."""
    plt = _plt()
    n_rows = 3 + len(data.fields)
    fig, axes = plt.subplots(n_rows, 1, figsize=(8, 1.8 * n_rows), sharex=True)
    T = data.spikes.shape[1]
    t = (np.arange(T) + 0.5) * data.bin_s
    ys, xs = np.nonzero(data.spikes[trial].T)
    axes[0].scatter(t[xs], ys, s=4, c="k", marker="|")
    axes[0].set_ylabel("neuron")
    axes[0].set_title(f"{data.dataset}: trial {trial}, condition {int(data.condition[trial])}")
    axes[1].imshow(data.rates_hz[trial].T, aspect="auto", origin="lower", extent=(0, T * data.bin_s, 0, data.rates_hz.shape[2]))
    axes[1].set_ylabel("rate (Hz)")
    axes[2].plot(t, data.latents[trial][:, :3])
    axes[2].set_ylabel("latents (z)")
    for ax, (name, x) in zip(axes[3:], data.fields.items()):
        tf = np.arange(x.shape[1]) / data.field_rate_hz[name]
        ax.plot(tf, x[trial][:, :3], lw=0.7)
        ax.set_ylabel(name)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)
    return Path(path)


def rate_examples(true_counts: np.ndarray, predictions: dict[str, np.ndarray], bin_s: float, path: Path,
                  trial: int = 0, neurons: tuple[int, ...] = (0, 1, 2)) -> Path:
    """True expected counts vs each method's prediction for a few neurons of one test trial (Hz)."""
    plt = _plt()
    fig, axes = plt.subplots(len(neurons), 1, figsize=(8, 2.0 * len(neurons)), sharex=True)
    axes = np.atleast_1d(axes)
    t = (np.arange(true_counts.shape[1]) + 0.5) * bin_s
    for ax, n in zip(axes, neurons):
        ax.plot(t, true_counts[trial, :, n] / bin_s, "k", lw=2, label="true")
        for name, pred in predictions.items():
            ax.plot(t, pred[trial, :, n] / bin_s, lw=1, label=name)
        ax.set_ylabel(f"neuron {n} (Hz)")
    axes[0].legend(fontsize=7, ncol=3)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)
    return Path(path)


def metric_bars(rows: list[dict[str, Any]], metric: str, path: Path, targets: dict[str, float] | None = None) -> Path:
    """One bar per method for `metric` (rows: {"method", metric}); dashed lines at targets."""
    plt = _plt()
    rows = [r for r in rows if r.get(metric) is not None]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar([r["method"] for r in rows], [r[metric] for r in rows], color="tab:blue")
    for name, v in (targets or {}).items():
        ax.axhline(v, ls="--", c="tab:red", lw=1)
        ax.text(0, v, name, fontsize=7, va="bottom", color="tab:red")
    ax.set_ylabel(metric)
    ax.tick_params(axis="x", rotation=20, labelsize=8)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)
    return Path(path)
