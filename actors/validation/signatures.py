"""Signature library: fingerprints of known failure patterns in a FAISS index, persisted on disk. No Ray.

A fingerprint of a validation result is a fixed-order vector:
- per detector dimension (config.DIMENSIONS order): tanh(score / 5) and min(-log10 p, 3) / 3;
- summary column statistics of synthetic vs real, each squashed to about [-1, 1]: mean shift, log
  variance ratio (signed and absolute), tail-mass ratio, missingness increase, exact-copy share,
  category coverage loss, category total variation, correlation change (numeric pairs), association
  change (correlation ratio eta^2 of each numeric column on each categorical one - label noise
  weakens it without moving any marginal);
- a constant 1, so that clean pairs (all other components near 0) share one direction instead of
  pointing at random: without it a cosine search matches noise on clean data.
Fingerprints are L2-normalised and searched by inner product (IndexFlatIP = exact cosine). The
library is two files, index.faiss and labels.json (label + metadata per vector), both written
atomically; `confirm` adds a confirmed case and saves. `seed_library` builds a starting library from
the planted generator (case x severity x reference data set).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actors.common.config import validated
from actors.common.errors import InputError
from actors.common.storage import atomic_write_via as _atomic
from actors.validation.config import DIMENSIONS, DetectorConfig
from actors.validation.data import check_tables

# the per-column statistics of a fingerprint (not stats.STATISTICS, the dimensions' statistic functions)
SIGNATURE_STATISTICS = ("mean_shift", "log_var_ratio", "abs_log_var_ratio", "tail_mass_ratio", "missing_increase",
                        "exact_copy_share", "category_coverage_loss", "category_tv", "correlation_change",
                        "association_change")
FEATURES = tuple(f"{d}.{k}" for d in DIMENSIONS for k in ("score", "p")) + SIGNATURE_STATISTICS + ("bias",)
SCHEMA = 1


# ---------------------------------------------------------------- fingerprints

def dimension_features(report: Any) -> np.ndarray:
    """[2 * 8] squashed score and -log10 p per dimension, from a CollapseReport or its to_json() dict.
    A dimension missing from the report (not run) counts as score 0, p = 1."""
    dims = report["dimensions"] if isinstance(report, dict) else {k: d.summary() for k, d in report.dimensions.items()}
    out = []
    for name in DIMENSIONS:
        d = dims.get(name) or {"score": 0.0, "p_value": 1.0}
        score = float(d["score"]) if np.isfinite(d["score"]) else 0.0
        p = float(d["p_value"]) if np.isfinite(d["p_value"]) else 1.0
        out += [np.tanh(max(score, 0.0) / 5.0), min(-np.log10(max(p, 1e-12)), 3.0) / 3.0]
    return np.array(out)


def column_statistics(real: pd.DataFrame, synth: pd.DataFrame,
                      categorical: Iterable[str] | None = None) -> np.ndarray:
    """[10] data-set independent summaries of how the synthetic columns differ from the real ones."""
    numeric, cats = check_tables(real, synth, list(categorical) if categorical is not None else None)
    R = real[numeric].to_numpy(float) if numeric else np.empty((len(real), 0))
    S = synth[numeric].to_numpy(float) if numeric else np.empty((len(synth), 0))
    with np.errstate(all="ignore"):
        sd_r = np.nanstd(R, axis=0)
        keep = sd_r > 0
        R, S, sd_r = R[:, keep], S[:, keep], sd_r[keep]
        shift = np.nanmean(np.abs(np.nanmean(S, axis=0) - np.nanmean(R, axis=0)) / sd_r) if R.shape[1] else 0.0
        lvr = np.log(np.maximum(np.nanvar(S, axis=0), 1e-12) / sd_r ** 2) if R.shape[1] else np.zeros(1)
        lo, hi = np.nanquantile(R, 0.05, axis=0), np.nanquantile(R, 0.95, axis=0)
        tail_s = np.nanmean((S < lo) | (S > hi)) if R.shape[1] else 0.1
        tail_r = np.nanmean((R < lo) | (R > hi)) if R.shape[1] else 0.1
        miss = float(np.mean(np.isnan(S)) - np.mean(np.isnan(R))) if R.shape[1] else 0.0
        corr = 0.0
        if R.shape[1] >= 2:
            cr = pd.DataFrame(R).corr().to_numpy()
            cs = pd.DataFrame(S).corr().to_numpy()
            iu = np.triu_indices(R.shape[1], 1)
            corr = float(np.nanmean(np.abs(cr[iu] - cs[iu])))
    cols = numeric + cats
    real_rows = set(pd.util.hash_pandas_object(real[cols].round(9), index=False).to_numpy())
    copies = float(np.isin(pd.util.hash_pandas_object(synth[cols].round(9), index=False).to_numpy(),
                           list(real_rows)).mean())
    cover, tv, assoc = [], [], []
    for c in cats:
        assoc += [abs(_eta2(real[c], real[x]) - _eta2(synth[c], synth[x])) for x in numeric]
        pr = real[c].astype(str).value_counts(normalize=True)
        ps = synth[c].astype(str).value_counts(normalize=True)
        cover.append(float(ps.reindex(pr.index).fillna(0).gt(0).mean()))
        tv.append(0.5 * float(pr.subtract(ps, fill_value=0).abs().sum()))
    return np.array([np.tanh(2 * shift), np.tanh(np.median(lvr)), np.tanh(np.mean(np.abs(lvr))),
                     np.tanh(np.log(max(tail_s, 1e-3) / max(tail_r, 1e-3))), np.tanh(5 * miss), copies,
                     1 - (np.mean(cover) if cover else 1.0), float(np.mean(tv)) if tv else 0.0,
                     np.tanh(3 * corr), np.tanh(5 * np.mean(assoc)) if assoc else 0.0])


def _eta2(groups: pd.Series, x: pd.Series) -> float:
    """Correlation ratio: share of x's variance explained by the category (0 = no association)."""
    df = pd.DataFrame({"g": groups.astype(str).to_numpy(), "x": x.to_numpy(float)}).dropna()
    total = float(((df.x - df.x.mean()) ** 2).sum())
    if total <= 0:
        return 0.0
    means = df.groupby("g").x.transform("mean")
    return float(((means - df.x.mean()) ** 2).sum()) / total


def fingerprint(report: Any, real: pd.DataFrame, synth: pd.DataFrame,
                categorical: Iterable[str] | None = None) -> np.ndarray:
    """The fixed-order fingerprint (FEATURES) of a validation result, float32, L2-normalised."""
    v = np.r_[dimension_features(report), column_statistics(real, synth, categorical), 1.0]
    v = np.nan_to_num(v, nan=0.0, posinf=1.0, neginf=-1.0)
    return (v / np.linalg.norm(v)).astype(np.float32)


# ---------------------------------------------------------------- the library

@dataclass
class Match:
    label: str
    similarity: float     # cosine similarity in [-1, 1]
    meta: dict


def _normalised(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    if v.ndim != 1 or v.size != len(FEATURES):
        raise InputError("fingerprint", f"shape {v.shape}", f"a vector of {len(FEATURES)} values ({SCHEMA=})")
    if not np.isfinite(v).all() or not np.linalg.norm(v) > 0:
        raise InputError("fingerprint", "non-finite or all-zero values", "finite, not all zero")
    return v / np.linalg.norm(v)


class SignatureLibrary:
    """Known failure patterns: a FAISS inner-product index over normalised fingerprints + labels."""

    def __init__(self, path: str | Path | None = None):
        import faiss

        self.path = Path(path) if path is not None else None
        self.index = faiss.IndexFlatIP(len(FEATURES))
        self.entries: list[dict] = []   # {"label": str, "meta": {...}} per vector, in index order

    def __len__(self) -> int:
        return self.index.ntotal

    def add(self, fp: np.ndarray, label: str, meta: dict | None = None) -> None:
        if not label:
            raise InputError("label", "empty label", "a non-empty pattern name")
        self.index.add(_normalised(fp)[None, :])
        self.entries.append({"label": str(label), "meta": dict(meta or {})})

    def prescreen_risk(self, fp: np.ndarray, k: int = 5) -> list[Match]:
        """The k nearest known patterns (cosine similarity, best first)."""
        if k < 1:
            raise InputError("k", f"{k}", ">= 1")
        if len(self) == 0:
            return []
        sims, idx = self.index.search(_normalised(fp)[None, :], min(k, len(self)))
        return [Match(self.entries[i]["label"], float(s), self.entries[i]["meta"]) for s, i in zip(sims[0], idx[0])]

    def confirm(self, fp: np.ndarray, label: str, meta: dict | None = None) -> None:
        """A confirmed case joins the library (and is saved when the library has a path)."""
        self.add(fp, label, {**(meta or {}), "confirmed": True})
        if self.path is not None:
            self.save()

    def vectors(self) -> np.ndarray:
        return self.index.reconstruct_n(0, len(self)) if len(self) else np.zeros((0, len(FEATURES)), np.float32)

    def save(self, path: str | Path | None = None) -> Path:
        """index.faiss then labels.json, each via a temp file and rename; load checks they agree."""
        import faiss

        out = Path(path) if path is not None else self.path
        if out is None:
            raise InputError("path", "no path to save the library to", "a directory")
        out.mkdir(parents=True, exist_ok=True)
        _atomic(out / "index.faiss", lambda tmp: faiss.write_index(self.index, tmp))
        side = {"schema": SCHEMA, "features": list(FEATURES), "entries": self.entries}
        _atomic(out / "labels.json", lambda tmp: Path(tmp).write_text(json.dumps(side, indent=1)))
        self.path = out
        return out

    @classmethod
    def load(cls, path: str | Path) -> SignatureLibrary:
        import faiss

        lib = cls(path)
        side = json.loads((lib.path / "labels.json").read_text())
        if side.get("features") != list(FEATURES):
            raise InputError("path", f"{path} holds fingerprints of another schema ({side.get('schema')})",
                             f"schema {SCHEMA}")
        lib.index = faiss.read_index(str(lib.path / "index.faiss"))
        lib.entries = side["entries"]
        if lib.index.ntotal != len(lib.entries):   # an interrupted save between the two renames
            raise InputError("path", f"{lib.index.ntotal} vectors but {len(lib.entries)} labels", "equal counts")
        return lib




# ---------------------------------------------------------------- seeding from the planted generator

SEED_DETECTOR = {"n_null": 19, "classifier": "logistic", "mi_pairs": 3, "mi_rows": 100}   # cheap, coarse p


def planted_fingerprint(case: str, severity: str, dataset: str, seed: int,
                        detector: DetectorConfig | dict | None = None) -> np.ndarray:
    """Fingerprint of one planted pair (the detector at `detector`, cheap by default)."""
    from actors.validation.detector import detect
    from actors.validation.planted import plant

    cfg = validated(DetectorConfig, detector if detector is not None else SEED_DETECTOR, prefix="detector.")
    pair = plant(case=case, severity=severity, dataset=dataset, seed=seed)
    report = detect(pair.real, pair.synth, cfg.model_copy(update={"seed": seed}))
    return fingerprint(report, pair.real, pair.synth)


def seed_library(cases: Iterable[str], *, severities: Iterable[str] = ("low", "medium", "high"),
                 datasets: Iterable[str] = ("breast_cancer", "wine"), seeds: Iterable[int] = (0,),
                 detector: DetectorConfig | dict | None = None, path: str | Path | None = None,
                 on_entry: Callable[[dict], None] | None = None) -> SignatureLibrary:
    """A library with one fingerprint per case x severity x data set x seed, labelled by the case
    (a clean control is labelled 'clean', with severity 'none' and a different seed per level)."""
    from actors.validation.planted import categorical_columns, load_reference

    lib = SignatureLibrary(path)
    for dataset in datasets:
        has_cats = bool(categorical_columns(load_reference(dataset)[0]))
        for case in cases:
            if case.startswith("category_") and not has_cats:
                continue   # no categorical column to corrupt
            for j, sev in enumerate(severities):
                for seed in seeds:
                    if case == "clean":   # no severity: one more clean control per severity level
                        sev, seed = "none", seed + 1000 * j
                    fp = planted_fingerprint(case, sev if case != "clean" else "high", dataset, seed, detector)
                    meta = {"severity": sev, "dataset": dataset, "seed": seed}
                    lib.add(fp, case, meta)
                    if on_entry is not None:
                        on_entry({"label": case, **meta})
    if path is not None:
        lib.save()
    return lib
