"""WebDataset-style shards: tar files of `.npy` members, one per field per sample, and an index.

Layout of a shard directory:

    shard-000000.tar   members "<key>.<field>.npy" (key = 9-digit global sample index), as webdataset
    shard-000001.tar   groups them: every member of one key is one sample
    ...
    index.json         {"format", "num_samples", "shard_size", "shards": [{"name", "count", "first"}],
                        "fields": {field: {"shape", "dtype"}}, "meta": {...}}

`write_shards(samples, out_dir, shard_size=1000, meta=...)` checks every sample (same fields, shapes and
dtypes as the first; finite floats), writes each shard atomically and `index.json` last, so a directory
with an index is complete. `ShardDataset(dir)` reads it with a deterministic order: for epoch `e` the
shard list and the samples within each shard are permuted by `seed + e` (or kept in order with
`shuffle=False`); global batch `b` is samples [b*B*W, (b+1)*B*W) of that order and rank `r` takes its
r-th slice of B, so W ranks of batch B see exactly the samples one process of batch B*W sees.
`batches(rank, world_size, batch_size, epoch, cursor)` resumes at batch `cursor` of the epoch (the
per-rank data cursor a checkpoint stores). Missing shards, mismatched shapes or dtypes and NaN raise
InputError naming the file.
"""
from __future__ import annotations

import io
import json
import tarfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from actors.common.errors import InputError
from actors.common.storage import atomic_write_bytes, atomic_write_json

__all__ = ["INDEX", "FORMAT", "ShardDataset", "write_shards"]

INDEX = "index.json"
FORMAT = "attractor-shards/1"


def _shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def _check_sample(sample: dict[str, np.ndarray], key: int, fields: dict[str, dict] | None, where: str
                  ) -> dict[str, np.ndarray]:
    if not isinstance(sample, dict) or not sample:
        raise InputError("samples", f"{where}: sample {key} is not a non-empty dict of arrays")
    arrays = {}
    for name, value in sample.items():
        if not isinstance(name, str) or not name or "." in name or "/" in name:
            raise InputError("samples", f"{where}: sample {key} has a bad field name {name!r}",
                             "non-empty names without '.' or '/'")
        arr = np.asarray(value)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise InputError("samples", f"{where}: sample {key} field {name!r} has dtype {arr.dtype}",
                             "bool, integer or float arrays")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InputError("samples", f"{where}: sample {key} field {name!r} holds NaN or infinity",
                             "finite values")
        arrays[name] = arr
    if fields is not None:
        if set(arrays) != set(fields):
            raise InputError("samples", f"{where}: sample {key} has fields {sorted(arrays)}, the dataset has "
                             f"{sorted(fields)}", "the same fields in every sample")
        for name, arr in arrays.items():
            want = fields[name]
            if list(arr.shape) != want["shape"] or str(arr.dtype) != want["dtype"]:
                raise InputError("samples", f"{where}: sample {key} field {name!r} is {arr.dtype}{list(arr.shape)}, "
                                 f"the dataset has {want['dtype']}{want['shape']}", "one shape and dtype per field")
    return arrays


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_shards(samples: Iterable[dict[str, np.ndarray]], out_dir: str | Path, shard_size: int = 1000,
                 meta: dict[str, Any] | None = None, *, overwrite: bool = False) -> dict[str, Any]:
    """Write `samples` (dicts of arrays, same fields/shapes/dtypes in all) as shards; returns the index.

    Each shard is written atomically and `index.json` last: a directory is a dataset only once its index
    exists. An existing index is an error unless `overwrite` (then stale shards beyond the new count are
    removed after the new index is written).
    """
    out = Path(out_dir)
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise InputError("shard_size", f"{shard_size!r} is not a positive integer", ">= 1")
    if (out / INDEX).exists() and not overwrite:
        raise InputError("out", f"{out} already holds a shard dataset ({out / INDEX})",
                         "an empty directory, or overwrite=True")
    meta = json.loads(json.dumps(meta or {}))   # JSON-able, copied
    fields: dict[str, dict] | None = None
    shards: list[dict[str, Any]] = []
    members: list[tuple[str, bytes]] = []
    count = 0
    n = 0

    def flush() -> None:
        nonlocal members, count
        if count:
            name = _shard_name(len(shards))
            atomic_write_bytes(out / name, _tar_bytes(members))
            shards.append({"name": name, "count": count, "first": n - count})
        members, count = [], 0

    for sample in samples:
        arrays = _check_sample(sample, n, fields, str(out))
        if fields is None:
            fields = {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in sorted(arrays.items())}
        for name, arr in sorted(arrays.items()):
            members.append((f"{n:09d}.{name}.npy", _npy_bytes(arr)))
        n += 1
        count += 1
        if count == shard_size:
            flush()
    flush()
    if not n:
        raise InputError("samples", "no samples to write", "at least one sample")
    index = {"format": FORMAT, "num_samples": n, "shard_size": shard_size, "shards": shards,
             "fields": fields, "meta": meta}
    atomic_write_json(out / INDEX, index)
    if overwrite:   # shards of an older, longer dataset
        for stale in sorted(out.glob("shard-*.tar")):
            if stale.name not in {s["name"] for s in shards}:
                stale.unlink(missing_ok=True)
    return index


class ShardDataset:
    """A shard directory written by `write_shards`, read deterministically and resumably. Decoded shards
    are kept in an LRU cache of `cache_bytes` (512 MiB): a data set that fits is read from disk once.

    `ds.num_samples`, `ds.fields` ({field: {"shape", "dtype"}}), `ds.meta`, `ds.shards` (names in index
    order), `ds.fingerprint` (identifies the data for checkpoints), `ds.load_all()` (every sample in index
    order, stacked), `ds.batches(...)` (training batches).
    """

    def __init__(self, directory: str | Path, *, cache_bytes: int = 1 << 29):
        self.directory = Path(directory)
        index_path = self.directory / INDEX
        if not self.directory.is_dir():
            raise InputError("data", f"no such directory {str(self.directory)!r}", "a shard directory (write_shards)")
        if not index_path.is_file():
            raise InputError("data", f"{index_path} is missing (not a shard directory, or its writer did not "
                             "finish)", "a directory written by write_shards")
        try:
            index = json.loads(index_path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError("data", f"{index_path} is not readable JSON: {exc}") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise InputError("data", f"{index_path} is not a {FORMAT} index", FORMAT)
        self.index = index
        self.fields: dict[str, dict] = index["fields"]
        self.meta: dict[str, Any] = index.get("meta", {})
        self.num_samples: int = int(index["num_samples"])
        self._shards: list[dict[str, Any]] = index["shards"]
        if sum(s["count"] for s in self._shards) != self.num_samples:
            raise InputError("data", f"{index_path}: shard counts do not add up to num_samples={self.num_samples}")
        missing = [s["name"] for s in self._shards if not (self.directory / s["name"]).is_file()]
        if missing:
            raise InputError("data", f"{self.directory / missing[0]} is missing ({len(missing)} of "
                             f"{len(self._shards)} shards missing: {', '.join(missing[:5])})",
                             "every shard listed in index.json")
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cache_bytes = int(cache_bytes)   # decoded shards kept (LRU); at least the one in use

    # -- description ------------------------------------------------------------------------------
    @property
    def shards(self) -> list[str]:
        return [s["name"] for s in self._shards]

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint records about its data: sample count, shard counts, fields, meta."""
        return {"num_samples": self.num_samples, "shards": [[s["name"], s["count"]] for s in self._shards],
                "fields": self.fields}

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return f"ShardDataset({str(self.directory)!r}, {self.num_samples} samples, {len(self._shards)} shards)"

    # -- reading ----------------------------------------------------------------------------------
    def _read_shard(self, i: int) -> dict[str, np.ndarray]:
        """Shard i as {field: array[count, *shape]} (cached), every member checked."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        spec = self._shards[i]
        path = self.directory / spec["name"]
        count, first = int(spec["count"]), int(spec["first"])
        out = {k: np.empty((count, *f["shape"]), dtype=f["dtype"]) for k, f in self.fields.items()}
        seen = {k: np.zeros(count, bool) for k in self.fields}
        try:
            tar = tarfile.open(path, mode="r:")
        except (OSError, tarfile.TarError) as exc:
            raise InputError("data", f"{path} is not a readable tar shard: {exc}") from None
        with tar:
            for member in tar:
                key, _, rest = member.name.partition(".")
                field, _, ext = rest.rpartition(".")
                if ext != "npy" or field not in self.fields or not key.isdigit():
                    raise InputError("data", f"{path}: unexpected member {member.name!r}",
                                     "<key>.<field>.npy for the fields in index.json")
                j = int(key) - first
                if not 0 <= j < count:
                    raise InputError("data", f"{path}: member {member.name!r} is outside the shard's samples "
                                     f"{first}..{first + count - 1}")
                try:
                    arr = np.load(io.BytesIO(tar.extractfile(member).read()), allow_pickle=False)
                except (ValueError, OSError) as exc:
                    raise InputError("data", f"{path}: member {member.name!r} is not a readable .npy: {exc}") from None
                want = self.fields[field]
                if list(arr.shape) != want["shape"] or str(arr.dtype) != want["dtype"]:
                    raise InputError("data", f"{path}: {member.name} is {arr.dtype}{list(arr.shape)}, index.json "
                                     f"says {want['dtype']}{want['shape']}", "one shape and dtype per field")
                if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                    raise InputError("data", f"{path}: {member.name} holds NaN or infinity", "finite values")
                out[field][j] = arr
                seen[field][j] = True
        for field, ok in seen.items():
            if not ok.all():
                raise InputError("data", f"{path}: sample {first + int(np.argmin(ok))} has no field {field!r} "
                                 f"({int((~ok).sum())} missing)", "every field for every sample")
        self._cache[i] = out
        while len(self._cache) > 1 and sum(a.nbytes for sh in self._cache.values() for a in sh.values()) > self._cache_bytes:
            self._cache.popitem(last=False)
        return out

    def load_all(self) -> dict[str, np.ndarray]:
        """Every sample in index order: {field: array[num_samples, *shape]}."""
        parts = [self._read_shard(i) for i in range(len(self._shards))]
        return {k: np.concatenate([p[k] for p in parts]) for k in self.fields}

    def order(self, epoch: int, *, seed: int = 0, shuffle: bool = True) -> list[tuple[int, int]]:
        """The epoch's sample order as (shard, position in shard): shards permuted, then samples within
        each shard permuted, both from `seed + epoch` (index order when not `shuffle`)."""
        if not shuffle:
            return [(i, j) for i, s in enumerate(self._shards) for j in range(int(s["count"]))]
        rng = np.random.default_rng([int(seed), int(epoch)])
        out = []
        for i in rng.permutation(len(self._shards)):
            out += [(int(i), int(j)) for j in rng.permutation(int(self._shards[i]["count"]))]
        return out

    def batches_per_epoch(self, world_size: int, batch_size: int) -> int:
        """Full global batches (batch_size * world_size samples) per epoch; the remainder is dropped."""
        return self.num_samples // (int(batch_size) * int(world_size))

    def batches(self, rank: int, world_size: int, batch_size: int, epoch: int, cursor: int = 0, *,
                seed: int = 0, shuffle: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Rank `rank`'s batches of epoch `epoch`, starting at its batch number `cursor` (0 = the epoch's
        start). Each is {field: array[batch_size, *shape]}; global batch b is samples
        [b*batch_size*world_size, (b+1)*batch_size*world_size) of `order(epoch)` and this rank takes
        slice `rank`. Only full global batches are yielded."""
        for name, v, lo in (("world_size", world_size, 1), ("batch_size", batch_size, 1), ("epoch", epoch, 0),
                            ("cursor", cursor, 0)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
                raise InputError(name, f"{v!r} is not an integer >= {lo}", f">= {lo}")
        if not 0 <= rank < world_size:
            raise InputError("rank", f"{rank!r} is not in [0, world_size={world_size})", f"0..{world_size - 1}")
        n_batches = self.batches_per_epoch(world_size, batch_size)
        if n_batches == 0:
            raise InputError("batch_size", f"{batch_size} x {world_size} ranks is more than the {self.num_samples} "
                             f"samples of {self.directory}", f"<= {self.num_samples // world_size}")
        order = self.order(epoch, seed=seed, shuffle=shuffle)
        global_b = batch_size * world_size
        for b in range(int(cursor), n_batches):
            start = b * global_b + rank * batch_size
            picks = order[start:start + batch_size]
            yield {k: np.stack([self._read_shard(i)[k][j] for i, j in picks]) for k in self.fields}


