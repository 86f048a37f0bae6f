"""Prompt features for the router: sentence embeddings (bundled all-MiniLM-L6-v2, cached on disk) and
a token-count estimate for the context term. No Ray, no downloads.

    E = prompt_embeddings(prompts, EmbeddingConfig())     # [n, 384] float64, unit norm
    n_tok = token_estimate(prompts)                       # ceil(characters / 4)
    S = prompt_stats(prompts)                             # [n, 11] cheap text statistics (predictor option)
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from actors.common.embeddings import EmbeddingCache, default_cache_dir, embed
from actors.router.config import EmbeddingConfig

__all__ = ["CHARS_PER_TOKEN", "PROMPT_STATS", "prompt_embeddings", "prompt_stats", "token_estimate"]

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


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")                       # 1,000 and 2.5 count once
_CHOICES = re.compile(r"(?m)^\s*A[.)]\s.*\n(?:.*\n)*?\s*B[.)]\s")   # lines "A. ..." then "B. ..."
_BASE_STATS = ("log1p_tokens", "log1p_numbers", "log1p_digits", "question_marks", "log1p_words")
PROMPT_STATS = _BASE_STATS + tuple(f"{n}_open" for n in _BASE_STATS) + ("multiple_choice",)


def prompt_stats(prompts: Sequence[str]) -> np.ndarray:
    """[n, 11] cheap statistics of each prompt (columns `PROMPT_STATS`), the predictor's optional extra
    input (`predictor.prompt_stats`): ln(1 + characters / 4), ln(1 + numbers) (a number is a run of
    digits with inner . or , separators: the quantities of a word problem), ln(1 + digits), the count of
    "?", ln(1 + whitespace-separated words); the same five times (1 - multiple_choice) (the "_open"
    columns: their effect may differ on open questions); multiple_choice = 1 when a line starting
    "A." / "A)" is followed by one starting "B." / "B)" (MMLU's layout), else 0."""
    rows = []
    for p in prompts:
        base = [np.log1p(len(p) / CHARS_PER_TOKEN), np.log1p(len(_NUMBER.findall(p))),
                np.log1p(sum(c.isdigit() for c in p)), float(p.count("?")), np.log1p(len(p.split()))]
        mc = 1.0 if _CHOICES.search(p) else 0.0
        rows.append(base + [v * (1.0 - mc) for v in base] + [mc])
    return np.array(rows, np.float64).reshape(len(rows), len(PROMPT_STATS))
