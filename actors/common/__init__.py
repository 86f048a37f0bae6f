"""common: the runtime every subsystem is built on (see docs/extending.md).

Ray-free, importable by engines:
    errors   InputError (field, message, allowed), TooLarge (413), NotFound (404), UnknownName,
             from_validation — one error contract, picklable through Ray
    config   Strict (frozen, extra="forbid"), WorkerConfig (one meaning of `auto`), validated()
    storage  atomic writes (bytes, text, JSON, Parquet, figures; files 0644, dirs 0755),
             claim_out_dir, FileStore (parquet_store, json_store, pickle_store) for resumable tasks
    budget   Budget / checkpoint() / scope: deadlines and cancellation engine loops check (504 BudgetExceeded);
             task_budget() / task_scope() carry a caller's budget into a Ray task
    lazy     lazy_exports: a subsystem's public namespace imported on first use
    embeddings  the bundled sentence encoder (text extra) with an on-disk cache
For actors and pools (import Ray):
    worker     BaseWorker (GPU ids, thread pinning, info(), metrics), named_actors(), resolve_worker_resources()
    scheduler  run_tasks(): the pull scheduler with optional on-disk resume
"""
from actors.common.config import Strict, WorkerConfig, validated
from actors.common.errors import Forbidden, InputError, NotFound, TooLarge, UnknownName, from_validation
from actors.common.storage import (
    FileStore,
    atomic_write_bytes,
    atomic_write_figure,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    atomic_write_via,
    claim_out_dir,
    json_store,
    parquet_store,
    pickle_store,
)

__all__ = [
    "FileStore", "Forbidden", "InputError", "NotFound", "Strict", "TooLarge", "UnknownName", "WorkerConfig",
    "atomic_write_bytes", "atomic_write_figure", "atomic_write_json", "atomic_write_parquet", "atomic_write_text",
    "atomic_write_via", "claim_out_dir", "from_validation", "json_store", "parquet_store", "pickle_store",
    "validated",
]
