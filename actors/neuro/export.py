"""A generated dataset on disk: trainer shards + ground truth.

    OUT/train/          shard directory of the training trials (actors.trainer.write_shards), in a
                        seeded random order (a shard mixes conditions); per sample "spikes" [T, N]
                        float32 (every neuron), "lfp" [S, C], "eeg" [S', C'], "trial", "condition"
                        (int64); index meta = the spec and the modality layout
    OUT/test/           the held-out trials, same fields
    OUT/ground_truth.npz  NeuroData.arrays(): spikes, rates_hz, latents, condition, is_test, heldout,
                        field recordings and clean signals, the Lorenz readout
    OUT/spec.json       the NeuroDataSpec (claim_out_dir: a rerun with another spec is refused)
    OUT/summary.json    sizes, mean counts per bin, the true-rate co-bps ceiling on the test trials
    OUT/preview.png     one trial: raster, true rates, latents, LFP and EEG

`read_dataset(OUT)` loads it back (with the spec) and checks the shard directories against the
ground truth, naming the file that is missing or does not match.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from actors.common.config import validated
from actors.common.errors import InputError
from actors.common.storage import atomic_write_bytes, atomic_write_json, claim_out_dir
from actors.neuro.config import NeuroDataSpec
from actors.neuro.datasets import NeuroData, make_dataset, trial_samples
from actors.neuro.metrics import bits_per_spike

__all__ = ["GROUND_TRUTH", "model_layout", "read_dataset", "write_dataset"]

GROUND_TRUTH = "ground_truth.npz"


def model_layout(spec: NeuroDataSpec) -> dict[str, Any]:
    """The modality sizes a model config must match (NeuroFMX's spikes / lfp / eeg blocks)."""
    n = spec.n_neurons
    out: dict[str, Any] = {"spikes": {"n_neurons": n, "n_heldout": int(round(spec.heldout_fraction * n)),
                                      "bin_s": spec.bin_s}, "n_bins": spec.n_bins}
    for name in ("lfp", "eeg"):
        f = getattr(spec, name)
        out[name] = None if f is None else {"n_channels": f.n_channels, "rate_hz": f.rate_hz,
                                            "n_samples": int(round(spec.n_bins * spec.bin_s * f.rate_hz))}
    return out


def _summary(spec: NeuroDataSpec, data: NeuroData) -> dict[str, Any]:
    te, h = data.is_test, data.heldout
    ceiling = bits_per_spike(data.spikes[te][..., h], data.expected_counts[te][..., h]) if te.any() and h.any() else None
    return {"dataset": spec.dataset, "seed": spec.seed, "n_trials": data.n_trials, "n_train": int((~te).sum()),
            "n_test": int(te.sum()), "n_bins": int(data.spikes.shape[1]), "bin_s": data.bin_s,
            "n_neurons": int(data.spikes.shape[2]), "n_heldout": int(h.sum()),
            "mean_counts_per_bin": float(data.spikes.mean()), "mean_rate_hz": float(data.rates_hz.mean()),
            "fields": {k: list(v.shape[1:]) for k, v in data.fields.items()},
            "co_bps_ceiling_test": ceiling, "layout": model_layout(spec)}


def write_dataset(spec: NeuroDataSpec, out: str | Path, *, preview: bool = True) -> dict[str, Any]:
    """Generate `spec`'s dataset and write it under `out` (layout in the module docstring)."""
    from actors.trainer import write_shards

    out = Path(out)
    claim_out_dir(out, {"neuro_data": spec.model_dump(mode="json")}, "neuro dataset")
    data = make_dataset(spec)
    meta = {"neuro": spec.model_dump(mode="json"), "layout": model_layout(spec)}
    order_rng = np.random.default_rng([spec.seed, 2])
    for split, which in (("train", ~data.is_test), ("test", data.is_test)):
        # trials in a seeded random order: a shard (and so a batch of the trainer's shard-then-sample
        # shuffle) mixes conditions instead of holding the last few conditions only
        idx = order_rng.permutation(np.flatnonzero(which))
        if len(idx):
            write_shards(trial_samples(data, idx), out / split, shard_size=spec.shard_size,
                         meta={**meta, "split": split}, overwrite=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **data.arrays())
    atomic_write_bytes(out / GROUND_TRUTH, buf.getvalue())
    summary = _summary(spec, data)
    if preview:
        from actors.neuro.plots import dataset_preview

        summary["preview"] = str(dataset_preview(data, out / "preview.png"))
    atomic_write_json(out / "summary.json", summary)
    return summary


def read_dataset(directory: str | Path) -> tuple[NeuroData, NeuroDataSpec]:
    """The ground truth and spec of a directory written by `write_dataset` (InputError naming `data`)."""
    d = Path(directory)
    gt, spec_file = d / GROUND_TRUTH, d / "spec.json"
    for f in (gt, spec_file):
        if not f.is_file():
            raise InputError("data", f"{f} is missing (not a jobs.neuro_data directory?)",
                             "a directory written by jobs.neuro_data")
    try:
        spec = validated(NeuroDataSpec, json.loads(spec_file.read_text())["neuro_data"])
    except (ValueError, KeyError) as exc:
        raise InputError("data", f"{spec_file} is not a neuro dataset spec: {exc}") from None
    try:
        with np.load(gt, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise InputError("data", f"{gt} is not a readable npz: {exc}") from None
    data = NeuroData.from_arrays(arrays, dataset=spec.dataset)
    for name in ("spikes", "rates_hz", "latents"):
        if not np.isfinite(arrays[name]).all():
            raise InputError("data", f"{gt}: {name} holds NaN or infinity", "finite values")
    if data.spikes.shape != data.rates_hz.shape or len(data.condition) != data.spikes.shape[0]:
        raise InputError("data", f"{gt}: spikes {data.spikes.shape}, rates {data.rates_hz.shape} and "
                         f"{len(data.condition)} conditions do not match", "one trial per row in every array")
    return data, spec
