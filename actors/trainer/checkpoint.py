"""Atomic training checkpoints: a directory `ckpt-<step>` appears complete or not at all.

Layout of `<run>/checkpoints/ckpt-000000100/`:

    model.pt, optim.pt     full (unsharded) state dicts, FQN-keyed (ddp and fsdp2; portable between them)
    deepspeed/             engine.save_checkpoint output (deepspeed_zero3: one shard per rank; its resume
                           reads these) and model.pt with the gathered full weights (no optim.pt)
    rng-rank<r>.pt         torch / numpy / python / CUDA RNG streams of rank r
    meta.json              written last: format, model (name, cfg, parameter shapes), strategy, world size,
                           global step, per-rank data cursors, schedule state, data fingerprint, and the
                           manifest {file: size} every other file is checked against on load

Every rank writes into `.tmp-ckpt-<step>` beside it; rank 0 writes meta.json last and renames the
directory. A crash mid-write leaves only a `.tmp-*` directory, which no reader lists and the next run
removes; a checkpoint whose manifest does not match its files is refused on load.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actors.common.errors import InputError
from actors.common.storage import atomic_write_json

__all__ = ["CKPT_FORMAT", "capture_rng", "check_compatible", "commit_checkpoint", "latest_checkpoint",
           "list_checkpoints", "model_fingerprint", "prune_checkpoints", "read_meta", "remove_stale",
           "restore_rng", "temp_checkpoint_dir"]

CKPT_FORMAT = "attractor-train-ckpt/1"
_NAME = re.compile(r"^ckpt-(\d{9})$")


def ckpt_name(step: int) -> str:
    return f"ckpt-{int(step):09d}"


def temp_checkpoint_dir(root: Path, step: int) -> Path:
    """Where every rank writes the files of step `step` before rank 0 commits them."""
    return Path(root) / f".tmp-{ckpt_name(step)}"


def remove_stale(root: Path) -> None:
    """Delete `.tmp-*` directories left by a crash mid-write (call on rank 0 before any rank saves)."""
    root = Path(root)
    if root.is_dir():
        for p in root.glob(".tmp-ckpt-*"):
            shutil.rmtree(p, ignore_errors=True)


def _manifest(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != "meta.json"}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_checkpoint(tmp: Path, meta: dict[str, Any]) -> Path:
    """Write meta.json (with the manifest of what the ranks wrote) into `tmp`, then rename it to
    `ckpt-<step>`: the one moment the checkpoint becomes visible. Rank 0 only, after a barrier."""
    tmp = Path(tmp)
    for p in tmp.rglob("*"):   # data first on disk, then the manifest that vouches for it
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    meta = {**meta, "format": CKPT_FORMAT, "files": _manifest(tmp)}
    atomic_write_json(tmp / "meta.json", meta)
    final = tmp.parent / ckpt_name(meta["step"])
    if final.exists():   # the same step saved again (a restart replayed it): the new one wins
        old = tmp.parent / f".tmp-old-{final.name}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(tmp.parent)
    return final


def read_meta(path: Path, *, verify: bool = True) -> dict[str, Any]:
    """meta.json of checkpoint `path`; with `verify`, every file of its manifest present with its size."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not path.is_dir():
        raise InputError("resume", f"no checkpoint directory {str(path)!r}", "a ckpt-<step> directory of a run")
    if not meta_path.is_file():
        raise InputError("resume", f"{path} is not a complete checkpoint (no meta.json: its writer did not finish)",
                         "a ckpt-<step> directory written by the trainer")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise InputError("resume", f"{meta_path} is not readable JSON: {exc}") from None
    if meta.get("format") != CKPT_FORMAT:
        raise InputError("resume", f"{meta_path} is not a {CKPT_FORMAT} checkpoint", CKPT_FORMAT)
    if verify:
        for rel, size in meta["files"].items():
            f = path / rel
            if not f.is_file():
                raise InputError("resume", f"checkpoint {path} is incomplete: {rel} is missing")
            if f.stat().st_size != size:
                raise InputError("resume", f"checkpoint {path} is corrupt: {rel} has {f.stat().st_size} bytes, "
                                 f"its manifest says {size}")
    return meta


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` as (step, path), oldest first (`.tmp-*` and torn ones skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and (p / "meta.json").is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def prune_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints; returns the deleted paths."""
    found = list_checkpoints(root)
    gone = [p for _, p in found[:-keep]] if keep > 0 else []
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def model_fingerprint(name: str, cfg: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """What identifies a model's weights: its registry name, config and parameter shapes (by FQN)."""
    shapes = {k: list(v.shape) for k, v in _unwrapped(model).state_dict().items()}
    return {"name": name, "cfg": json.loads(json.dumps(cfg, default=str)), "shapes": shapes}


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def check_compatible(meta: dict[str, Any], path: Path, *, model: dict[str, Any], data: dict[str, Any],
                     identity: dict[str, Any], strategy: str, world_size: int) -> None:
    """Refuse a checkpoint of another model, data set or data order, or one this strategy cannot load."""
    saved = meta["model"]
    if saved["name"] != model["name"] or saved["cfg"] != model["cfg"]:
        raise InputError("resume", f"checkpoint {path} holds model {saved['name']!r} with cfg {saved['cfg']}; this run "
                         f"trains {model['name']!r} with cfg {model['cfg']}", "a checkpoint of the same model")
    if saved["shapes"] != model["shapes"]:
        diff = sorted(set(saved["shapes"]) ^ set(model["shapes"])) or \
            [k for k in saved["shapes"] if saved["shapes"][k] != model["shapes"][k]]
        raise InputError("resume", f"checkpoint {path} has other parameters than model {model['name']!r} "
                         f"(first difference: {diff[0]})", "a checkpoint of the same model")
    if meta["data"] != data:
        raise InputError("data", f"checkpoint {path} was trained on another data set "
                         f"({meta['data']['num_samples']} samples in {len(meta['data']['shards'])} shards; "
                         f"this one has {data['num_samples']} in {len(data['shards'])})", "the run's data directory")
    for key in ("batch_size", "seed", "shuffle"):
        if meta["identity"][key] != identity[key]:
            raise InputError(key, f"{identity[key]!r} differs from {meta['identity'][key]!r} of checkpoint {path} "
                             "(the data order would change)", repr(meta["identity"][key]))
    saved_ds = meta["strategy"] == "deepspeed_zero3"
    if saved_ds != (strategy == "deepspeed_zero3"):
        raise InputError("strategy", f"checkpoint {path} was written by {meta['strategy']!r}, which {strategy!r} "
                         "cannot load (ddp and fsdp2 share a format; deepspeed_zero3 has its own)",
                         "deepspeed_zero3" if saved_ds else "ddp or fsdp2")
    if saved_ds and meta["world_size"] != world_size:
        raise InputError("workers.num_workers", f"checkpoint {path} holds ZeRO-3 shards of {meta['world_size']} ranks, "
                         f"this run has {world_size}", str(meta["world_size"]))


def capture_rng() -> dict[str, Any]:
    """Every RNG stream the process draws from: torch (CPU), CUDA (all devices), numpy global, python."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
