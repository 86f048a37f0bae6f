"""Routing replay data in the shared schema (../shared/data/routellm/README.md): load, check, order.

Each row is a benchmark prompt with the strong and the weak model's score. `load_routes` reads one or
more Parquet files, checks every column's presence and type (an InputError naming the column and the
file), refuses empty prompts, non-finite scores and duplicated prompt ids, and drops the rows
RouteLLM drops (`contaminated`). A route (`route_id`) is one routing decision; a route may span several
rows (MT-Bench: two turns), and is decided from its first row's prompt, as RouteLLM decides MT-Bench
from the first turn. No Ray.

    data = load_routes(["gsm8k.parquet", "mmlu.parquet"])
    data.frame          # the kept rows, RouteLLM's order (see `routellm_order`)
    data.routes()       # one row per route: route_id, prompt, benchmark, category
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from actors.common.errors import InputError

__all__ = ["ALL_MMLU_DOMAINS", "COLUMNS", "RouteData", "load_routes", "rewards", "routellm_order", "validate_frame"]

# column -> kind ("str", "float", "bool", "int"), in the README's order
COLUMNS: dict[str, str] = {
    "prompt_id": "str", "route_id": "str", "benchmark": "str", "category": "str", "prompt": "str",
    "strong_score": "float", "weak_score": "float", "contaminated": "bool", "source_row": "int",
}

# RouteLLM's subject order (routellm/evals/mmlu/domains.py): its MMLU benchmark concatenates the
# subjects in this order, which fixes the row order its random baseline draws scores in.
ALL_MMLU_DOMAINS: tuple[str, ...] = (
    "high_school_european_history", "business_ethics", "clinical_knowledge", "medical_genetics",
    "high_school_us_history", "high_school_physics", "high_school_world_history", "virology",
    "high_school_microeconomics", "econometrics", "college_computer_science", "high_school_biology",
    "abstract_algebra", "professional_accounting", "philosophy", "professional_medicine", "nutrition",
    "global_facts", "machine_learning", "security_studies", "public_relations", "professional_psychology",
    "prehistory", "anatomy", "human_sexuality", "college_medicine", "high_school_government_and_politics",
    "college_chemistry", "logical_fallacies", "high_school_geography", "elementary_mathematics", "human_aging",
    "college_mathematics", "high_school_psychology", "formal_logic", "high_school_statistics",
    "international_law", "high_school_mathematics", "high_school_computer_science", "conceptual_physics",
    "miscellaneous", "high_school_chemistry", "marketing", "professional_law", "management",
    "college_physics", "jurisprudence", "world_religions", "sociology", "us_foreign_policy",
    "high_school_macroeconomics", "computer_security", "moral_scenarios", "moral_disputes",
    "electrical_engineering", "astronomy", "college_biology",
)


@dataclass(frozen=True)
class RouteData:
    """The kept rows of one or more files, the model names from their metadata, and what was dropped."""

    frame: pd.DataFrame
    files: tuple[str, ...]
    strong_model: str | None = None
    weak_model: str | None = None
    dropped_contaminated: dict[str, int] = field(default_factory=dict)   # per benchmark

    @property
    def benchmarks(self) -> list[str]:
        return list(dict.fromkeys(self.frame["benchmark"]))

    def routes(self) -> pd.DataFrame:
        """One row per route_id (first row = first turn), in row order: route_id, prompt, benchmark,
        category, and `n_rows` (the rows it decides)."""
        f = self.frame
        first = f.drop_duplicates("route_id", keep="first")
        counts = f.groupby("route_id", sort=False).size()
        out = first[["route_id", "prompt", "benchmark", "category"]].reset_index(drop=True)
        out["n_rows"] = counts.loc[out["route_id"]].to_numpy()
        return out

    def row_route_index(self) -> np.ndarray:
        """For each row, the index of its route in `routes()`."""
        order = {r: i for i, r in enumerate(dict.fromkeys(self.frame["route_id"]))}
        return self.frame["route_id"].map(order).to_numpy(np.int64)


def _kind_ok(kind: str, col: pd.Series) -> bool:
    t = col.dtype
    if kind == "str":
        if pd.api.types.is_string_dtype(t) and not pd.api.types.is_object_dtype(t):
            return True
        return pd.api.types.is_object_dtype(t) and col.map(lambda v: isinstance(v, str) or v is None).all()
    if kind == "float":
        return pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t)
    if kind == "bool":
        return pd.api.types.is_bool_dtype(t)
    return pd.api.types.is_integer_dtype(t) and not pd.api.types.is_bool_dtype(t)


_KIND_NAMES = {"str": "string", "float": "float (a number)", "bool": "boolean", "int": "integer"}


def validate_frame(frame: pd.DataFrame, where: str = "data") -> pd.DataFrame:
    """Check the shared schema on a frame; returns it with scores as float64. Errors name the column."""
    for col, kind in COLUMNS.items():
        if col not in frame.columns:
            raise InputError(col, f"{where} has no column {col!r}", ", ".join(COLUMNS))
        if not _kind_ok(kind, frame[col]):
            raise InputError(col, f"{where}: column {col!r} has type {frame[col].dtype}, expected {_KIND_NAMES[kind]}",
                             _KIND_NAMES[kind])
        if frame[col].isna().any():
            i = int(np.flatnonzero(frame[col].isna().to_numpy())[0])
            raise InputError(col, f"{where}: row {i} has a missing {col}", "a value in every row")
    frame = frame.copy()
    for col in ("strong_score", "weak_score"):
        v = frame[col].to_numpy(np.float64)
        if not np.all(np.isfinite(v)):
            i = int(np.flatnonzero(~np.isfinite(v))[0])
            raise InputError(col, f"{where}: row {i} ({frame['prompt_id'].iloc[i]}) has a non-finite score",
                             "finite numbers")
        frame[col] = v
    empty = frame["prompt"].str.strip().str.len() == 0
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise InputError("prompt", f"{where}: row {i} ({frame['prompt_id'].iloc[i]}) has an empty prompt",
                         "non-empty text")
    for col in ("prompt_id", "route_id", "benchmark", "category"):
        frame[col] = frame[col].astype(str)
    return frame


def _read(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    if not path.is_file():
        raise InputError("data", f"no such file {str(path)!r}", "a Parquet file in the shared routing schema")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError("data", f"{path.name} is not a readable Parquet file ({exc})") from None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items() if k != b"ARROW:schema"}
    return table.to_pandas(), meta


def routellm_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in RouteLLM's evaluation order: benchmarks as first seen; MMLU subjects in ALL_MMLU_DOMAINS
    order (unknown subjects after, by name); within a category by source_row. With this order the
    README's random-router numbers are reproduced to the last digit."""
    bench_rank = {b: i for i, b in enumerate(dict.fromkeys(frame["benchmark"]))}
    mmlu_rank = {d: i for i, d in enumerate(ALL_MMLU_DOMAINS)}
    cat_rank = np.array([mmlu_rank.get(c, len(mmlu_rank)) if b == "mmlu" else 0
                         for b, c in zip(frame["benchmark"], frame["category"])])
    key = pd.DataFrame({"b": frame["benchmark"].map(bench_rank).to_numpy(), "c": cat_rank,
                        "n": frame["category"].to_numpy(), "r": frame["source_row"].to_numpy(),
                        "i": np.arange(len(frame))})
    order = key.sort_values(["b", "c", "n", "r", "i"], kind="mergesort")["i"].to_numpy()
    return frame.iloc[order].reset_index(drop=True)


def load_routes(paths: str | Path | Sequence[str | Path], *, drop_contaminated: bool = True,
                max_rows: int | None = None, seed: int = 0) -> RouteData:
    """Read, check and concatenate routing files; drop contaminated rows (RouteLLM's protocol); with
    `max_rows`, keep a seeded sample of `max_rows` whole clean routes per file (smoke runs, tests)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise InputError("data", "no input file", "one or more Parquet files")
    frames, strong, weak = [], set(), set()
    dropped: dict[str, int] = {}
    for p in map(Path, paths):
        frame, meta = _read(p)
        frame = validate_frame(frame, p.name)
        if drop_contaminated:
            bad = frame["contaminated"].to_numpy(bool)
            for b, n in frame[bad].groupby("benchmark").size().items():
                dropped[str(b)] = dropped.get(str(b), 0) + int(n)
            frame = frame[~bad]
        if max_rows is not None and frame["route_id"].nunique() > max_rows:
            keep = pd.Series(frame["route_id"].unique()).sample(max_rows, random_state=seed)
            frame = frame[frame["route_id"].isin(set(keep))]
        frames.append(frame.assign(_file=p.name))
        if "strong_model" in meta:
            strong.add(meta["strong_model"])
        if "weak_model" in meta:
            weak.add(meta["weak_model"])
    if len(strong) > 1 or len(weak) > 1:
        raise InputError("data", f"the files route between different models (strong {sorted(strong)}, "
                         f"weak {sorted(weak)})", "files of one strong/weak pair")
    frame = pd.concat(frames, ignore_index=True)
    dup = frame["prompt_id"].duplicated()
    if dup.any():
        pid = frame["prompt_id"][dup].iloc[0]
        raise InputError("prompt_id", f"{pid!r} appears more than once (within or across files)", "unique ids")
    split = frame.groupby("route_id")["_file"].nunique()
    if (split > 1).any():
        raise InputError("route_id", f"route {split[split > 1].index[0]!r} spans several files", "one file per route")
    if frame.empty:
        raise InputError("data", "no rows left after dropping contaminated prompts", "at least one clean row")
    frame = routellm_order(frame.drop(columns="_file"))
    return RouteData(frame=frame, files=tuple(str(p) for p in paths), strong_model=next(iter(strong), None),
                     weak_model=next(iter(weak), None), dropped_contaminated=dropped)


def rewards(strong: np.ndarray, weak: np.ndarray, benchmark: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both models' scores as rewards in [0, 1] for the Beta posteriors: a benchmark whose scores all
    lie in [0, 1] (correctness) keeps them; otherwise (MT-Bench's 1-10 judge scores) both columns are
    divided by the benchmark's largest absolute score and clipped to [0, 1]."""
    strong, weak = np.asarray(strong, np.float64).copy(), np.asarray(weak, np.float64).copy()
    benchmark = np.asarray(benchmark)
    for b in np.unique(benchmark):
        m = benchmark == b
        both = np.concatenate([strong[m], weak[m]])
        if both.size and (both.min() < 0 or both.max() > 1):
            scale = np.abs(both).max()
            strong[m] = np.clip(strong[m] / scale, 0.0, 1.0)
            weak[m] = np.clip(weak[m] / scale, 0.0, 1.0)
    return strong, weak
