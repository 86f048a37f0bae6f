"""Atomic, resumable chunk storage: a chunk is on disk completely or not at all."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_via(path: Path, write: Callable[[str], None]) -> None:
    """write(tmp) into a temp file beside `path`, then rename: for writers that want a filename
    (joblib, torch.save, faiss.write_index). A crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def atomic_write_parquet(path: Path, table: pa.Table | pd.DataFrame) -> None:
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def chunk_path(out_dir: Path, index: int) -> Path:
    return out_dir / "chunks" / f"chunk-{index:06d}.parquet"


def finished_chunks(out_dir: Path, n_chunks: int) -> set[int]:
    """Chunks already written (a readable Parquet footer is the proof of completion)."""
    done = set()
    for i in range(n_chunks):
        p = chunk_path(out_dir, i)
        if p.exists():
            try:
                pq.read_metadata(p)
                done.add(i)
            except (pa.ArrowInvalid, OSError):
                p.unlink(missing_ok=True)  # torn write from a non-atomic copy: recompute
    return done
