"""Atomic, resumable files: a file is on disk completely or not at all, readable by others (0644).

Every subsystem writes its outputs through these functions, so a crash leaves the previous file or the
new one, never half of one, and a resubmitted job can trust what it finds.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FileStore", "atomic_write_bytes", "atomic_write_figure", "atomic_write_json", "atomic_write_parquet",
    "atomic_write_text", "atomic_write_via", "claim_out_dir", "json_store", "parquet_store", "pickle_store",
]

FILE_MODE = 0o644
DIR_MODE = 0o755


def _make_dirs(directory: Path) -> None:
    """mkdir -p with 0755 on the directories it creates (umask permitting)."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    directory.mkdir(parents=True, exist_ok=True)
    for d in missing:
        try:
            os.chmod(d, DIR_MODE)
        except OSError:   # created concurrently by another user: leave it
            pass


def _temp_beside(path: Path) -> str:
    _make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, FILE_MODE)   # mkstemp makes it owner-only
    return tmp


def atomic_write_via(path: Path, write: Callable[[str], None]) -> None:
    """write(tmp) into a temp file beside `path`, then rename: for writers that want a filename
    (joblib, torch.save, faiss.write_index, savefig). A crash leaves the old file or the new one."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)   # some writers recreate the file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write_via(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def atomic_write_json(path: Path, obj: Any) -> None:
    """Indented JSON; numpy scalars/arrays and paths are converted."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def atomic_write_parquet(path: Path, table: Any) -> None:
    """A pandas DataFrame or pyarrow Table as zstd Parquet."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def atomic_write_figure(path: Path, fig: Any, **savefig: Any) -> Path:
    """A matplotlib figure (format from the suffix: png, svg, pdf); the figure is left open."""
    path = Path(path)
    savefig.setdefault("format", path.suffix.lstrip(".") or "png")
    atomic_write_via(path, lambda tmp: fig.savefig(tmp, **savefig))
    return path


def claim_out_dir(out_dir: Path, identity: dict, what: str) -> None:
    """Resume only into a directory that holds the same work.

    The first run writes `identity` (spec, input fingerprint, ...) to DIR/spec.json; a later run with a
    different identity is refused with an InputError naming `out`, so two different runs never mix
    their chunks.
    """
    from actors.common.errors import InputError

    spec_file = Path(out_dir) / "spec.json"
    current = json.loads(json.dumps(identity, default=_json_default))
    if spec_file.exists():
        if json.loads(spec_file.read_text()) != current:
            raise InputError("out", f"{out_dir} already holds a different {what} ({spec_file})",
                             f"an empty directory or one written by the same {what}")
    else:
        atomic_write_json(spec_file, current)


@dataclass(frozen=True)
class FileStore:
    """One file per finished task: `directory/pattern.format(index)`, written atomically.

    A file present and readable is a finished task (a resumed run skips it); an unreadable one (a torn
    copy made outside these writers) is deleted and recomputed. `read` returns what the scheduler hands
    back for a skipped task (the result itself, or just the path for results kept on disk only).
    """

    directory: Path
    pattern: str
    write: Callable[[Path, Any], None]
    read: Callable[[Path], Any]

    def path(self, index: int) -> Path:
        return Path(self.directory) / self.pattern.format(index)

    def load(self, index: int) -> Any | None:
        p = self.path(index)
        if not p.exists():
            return None
        try:
            return self.read(p)
        except Exception:   # torn or foreign file: recompute the task
            p.unlink(missing_ok=True)
            return None

    def save(self, index: int, result: Any) -> None:
        self.write(self.path(index), result)


def _parquet_footer(path: Path) -> Path:
    import pyarrow.parquet as pq

    pq.read_metadata(path)   # a readable footer is the proof of completion
    return path


def parquet_store(directory: Path, pattern: str = "chunk-{:06d}.parquet") -> FileStore:
    """Tables kept on disk only: a skipped task loads as its path, so the driver holds no rows."""
    return FileStore(Path(directory), pattern, atomic_write_parquet, _parquet_footer)


def json_store(directory: Path, pattern: str, encode: Callable[[Any], Any] = lambda r: r,
               decode: Callable[[Any], Any] = lambda d: d) -> FileStore:
    """Results as JSON documents through `encode` / `decode`."""
    return FileStore(Path(directory), pattern, lambda p, r: atomic_write_json(p, encode(r)),
                     lambda p: decode(json.loads(Path(p).read_text())))


def pickle_store(directory: Path, pattern: str = "task-{:06d}.pkl") -> FileStore:
    """Arbitrary picklable results (dataclasses of numpy arrays); only for files this project wrote."""
    return FileStore(Path(directory), pattern, lambda p, r: atomic_write_bytes(p, pickle.dumps(r)),
                     lambda p: pickle.loads(Path(p).read_bytes()))
