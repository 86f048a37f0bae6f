"""Prompt features for the router: sentence embeddings (bundled all-MiniLM-L6-v2, cached on disk) and
a token-count estimate for the context term. No Ray, no downloads.

    E = prompt_embeddings(prompts, EmbeddingConfig())     # [n, 384] float64, unit norm
    n_tok = token_estimate(prompts)                       # ceil(characters / 4)
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from actors.common.embeddings import EmbeddingCache, default_cache_dir, embed
from actors.router.config import EmbeddingConfig

__all__ = ["CHARS_PER_TOKEN", "prompt_embeddings", "token_estimate"]

CHARS_PER_TOKEN = 4.0   # the usual English rule of thumb for BPE tokenizers (no tokenizer download)

_CACHES: dict[Path, EmbeddingCache] = {}


def _cache(cfg: EmbeddingConfig) -> EmbeddingCache | None:
    if not cfg.cache:
        return None
    directory = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    if directory not in _CACHES:       # one in-memory view per directory and process
        _CACHES[directory] = EmbeddingCache(directory)
    return _CACHES[directory]


def prompt_embeddings(prompts: Sequence[str], cfg: EmbeddingConfig | None = None) -> np.ndarray:
    """[n, 384] unit-norm embeddings of the prompts (read from / added to the on-disk cache)."""
    cfg = cfg or EmbeddingConfig()
    return embed(list(prompts), batch_size=cfg.batch_size, device=cfg.device, cache=_cache(cfg), field="prompt")


def token_estimate(prompts: Sequence[str]) -> np.ndarray:
    """Approximate prompt length in tokens: ceil(characters / CHARS_PER_TOKEN), at least 1."""
    return np.maximum(1.0, np.ceil(np.array([len(p) for p in prompts], np.float64) / CHARS_PER_TOKEN))
