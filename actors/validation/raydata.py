"""Ray Data path of the streaming summary: read_parquet / read_csv -> map_batches(sketch UDF) -> merge.

Each read task's batches become one `TableSketch` per batch (the UDF returns it pickled in a
one-row batch, so only sketches cross the object store, never the rows); the driver merges them.
Merging is order-independent (see actors/validation/sketches.py), so the result does not depend on
how Ray Data schedules or orders the blocks: the sample is identical to the in-process `summarize`
over the same batches, the moments equal to rounding, the KLL / HLL / frequent-items estimates
within their error bounds.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from actors.common.errors import InputError
from actors.validation.sketches import SketchConfig, TableSketch, merge_all


def _sketch_batch(batch: pd.DataFrame, config: SketchConfig, categorical: tuple[str, ...] | None
                  ) -> dict[str, np.ndarray]:
    """map_batches UDF (a Ray task): a pandas batch -> a one-row batch holding its pickled summary."""
    s = TableSketch(config, categorical=categorical).update(batch)
    return {"sketch": np.array([pickle.dumps(s)], dtype=object)}


def read(path: str | Path):
    """A Ray Dataset over a .parquet / .csv file (or a directory of .parquet files)."""
    import ray

    path = Path(path)
    if not path.exists():
        raise InputError("path", f"{path} does not exist", "an existing .parquet or .csv file")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in (".parquet", ".pq"):
        return ray.data.read_parquet(str(path))
    if suffix == ".csv":
        return ray.data.read_csv(str(path))
    raise InputError("path", f"unsupported file type {suffix!r}", ".parquet, .csv")


def summarize_ray(path: str | Path, *, k: int = 200, reservoir: int = 5_000, batch_rows: int = 100_000,
                  seed: int = 0, categorical: tuple[str, ...] | None = None) -> TableSketch:
    """One pass with Ray Data: per-batch sketches built in Ray tasks, merged on the driver."""
    cfg = SketchConfig(k=k, reservoir=reservoir, seed=seed)
    ds = read(path).map_batches(_sketch_batch, fn_kwargs={"config": cfg, "categorical": categorical},
                                batch_format="pandas", batch_size=batch_rows, zero_copy_batch=True)
    parts = [pickle.loads(row["sketch"]) for row in ds.iter_rows()]
    if not parts:
        raise InputError("path", f"{path} has no rows", ">= 10 rows")
    return merge_all(parts)
