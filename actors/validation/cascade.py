"""Cascade trainer: a ladder of models of growing capacity trained on the synthetic table. No Ray.

Each rung is fit on most of the synthetic rows and scored twice:
- utility (train-synthetic-test-real): the metric on the whole real table - can a model learned from
  the synthetic data do the real task? (accuracy for a categorical label, R^2 for a numeric one);
- learnability: the same metric on held-out synthetic rows - is there a learnable signal at all?
Capacity grows rung by rung (regularised linear -> gradient boosting of growing depth/iterations ->
MLPs of growing width); the climb stops when utility has not improved for `patience` rungs, because
a synthetic table whose utility plateaus early has nothing more for a bigger model to learn.

After the climb the best rung is cross-validated on the synthetic rows: every synthetic row gets
class probabilities from a model that never saw it, the input confident learning needs
(`cascade_label_issues`, `localize_with_cascade`) - an alternative to localize.py's logistic model.

The cascade is four modules, one concern each: cascade_config (the ladder and its settings), rungs
(one rung: split, models, fit, score), cascade_checkpoints (atomic per-rung files: a rerun with the
same `out_dir` resumes, stale checkpoints are never reused) and this one (the data and the climb).
The climb hands each rung to a `runner`: in this process by default; `actors.validation.pool`
supplies one that runs rungs as Ray tasks (a window of `parallel` rungs ahead; results are consumed
in ladder order, so the answer equals the in-process one).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actors.common.budget import checkpoint
from actors.common.config import validated
from actors.common.errors import InputError
from actors.common.storage import atomic_write_json
from actors.validation.cascade_checkpoints import load_oof, load_rung, oof_tag, run_key, save_oof, save_rung
from actors.validation.cascade_config import CascadeConfig
from actors.validation.config import LocalizerConfig
from actors.validation.data import pool
from actors.validation.localize import (
    FlaggedRow,
    Localization,
    _features_without,
    confident_learning,
    localize,
)
from actors.validation.rungs import CascadeData, Rung, out_of_fold, resolve_device, split_rows, train_rung

__all__ = ["CascadeResult", "Runner", "Submit", "cascade_label_issues", "climb", "in_process", "localize_with_cascade",
           "prepare", "train_cascade"]

# submit(fn, spec, *args) -> a zero-argument `get` of fn(spec, *args, data, cfg); fn is train_rung or out_of_fold
Submit = Callable[..., Callable[[], Any]]
# runner(cfg, data) -> submit: how rungs run (in_process here; actors.validation.pool.cascade_runner on Ray)
Runner = Callable[[CascadeConfig, CascadeData], Submit]


@dataclass
class CascadeResult:
    """Per-rung metrics, the best rung, out-of-sample outputs for every synthetic row, why it stopped."""

    task: str
    metric: str
    rungs: list[Rung]
    best: int                      # ladder index of the rung with the highest utility
    oof: np.ndarray                # [n_synth, K] class probabilities (classification) or [n_synth] predictions
    classes: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None   # [n_synth] class ids of the synthetic labels (classification)
    stopped_early: bool = False
    resumed: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"task": self.task, "metric": self.metric, "best": self.best, "stopped_early": self.stopped_early,
                "resumed": self.resumed, "rungs": [asdict(r) for r in self.rungs], "classes": self.classes}


# ---------------------------------------------------------------- data

def prepare(real: pd.DataFrame, synth: pd.DataFrame, label: str, cfg: CascadeConfig,
            categorical: list[str] | tuple[str, ...] | None = None) -> tuple[CascadeData, str, list[str]]:
    """Features / targets for both tables; (data, task, class names)."""
    for name, df in (("real", real), ("synthetic", synth)):
        if label not in df.columns:
            raise InputError("label", f"{label!r} is not a column of the {name} table", ", ".join(map(str, df.columns)))
        if df[label].isna().any():
            raise InputError(f"{name}.{label}", "the label has missing values", "no missing labels")
    pooled = pool(real, synth, categorical=categorical)
    F = _features_without(pooled, label)
    R, S = ~pooled.is_synth, pooled.is_synth
    task = cfg.task
    if task == "auto":
        task = "classification" if label in pooled.categorical else "regression"
    classes: list[str] = []
    if task == "classification":
        cat = pd.Categorical(pd.concat([real[label], synth[label]], ignore_index=True).astype(str))
        codes, classes = cat.codes.astype(np.int64), [str(c) for c in cat.categories]
        y_real, y_syn = codes[: len(real)], codes[len(real):]
        if len(np.unique(y_syn)) < 2:
            raise InputError(f"synthetic.{label}", "the synthetic label has a single class", ">= 2 classes")
    else:
        if label in pooled.categorical:
            raise InputError("task", f"regression needs a numeric label; {label!r} is categorical", "classification")
        y_real, y_syn = real[label].to_numpy(float), synth[label].to_numpy(float)
    rng = np.random.default_rng(cfg.seed)
    fit, hold = split_rows(len(y_syn), cfg.holdout, rng, y_syn if classes else None)
    return CascadeData(F[S], y_syn, F[R], y_real, fit, hold, len(classes)), task, classes


def in_process(cfg: CascadeConfig, data: CascadeData) -> Submit:
    """The default runner: each rung is a deferred call in this process."""
    return lambda fn, spec, *args: (lambda: fn(spec, *args, data, cfg))


def climb(real: pd.DataFrame, synth: pd.DataFrame, label: str, config: CascadeConfig | dict | None = None, *,
          out_dir: str | Path | None = None, categorical: list[str] | tuple[str, ...] | None = None,
          runner: Runner | None = None, **overrides: Any) -> Iterator[dict]:
    """Generator of progress events {rung, model, status, utility, learnability, seconds}; the last
    event has status 'finished' and carries the CascadeResult under 'result'."""
    cfg = validated(CascadeConfig, config, **overrides)
    if cfg.patience > len(cfg.rungs):
        raise InputError("patience", f"{cfg.patience} rungs of patience on a ladder of {len(cfg.rungs)}",
                         f"<= {len(cfg.rungs)}")
    if cfg.device == "cuda" and (runner is None or cfg.num_gpus == 0):
        resolve_device("cuda")   # fail here, naming the field, not inside a rung (MLP rungs would train here)
    data, task, classes = prepare(real, synth, label, cfg, categorical)
    out = Path(out_dir) if out_dir is not None else None
    key = run_key(data, cfg, task)
    submit = (runner or in_process)(cfg, data)
    pending: dict[int, Callable[[], Any]] = {}
    nxt = 0

    def top_up() -> None:   # keep `parallel` unfinished rungs in flight (speculatively, past a later stop)
        nonlocal nxt
        while nxt < len(cfg.rungs) and len(pending) < cfg.parallel:
            if out is None or load_rung(out, key, nxt, cfg.rungs[nxt]) is None:
                pending[nxt] = submit(train_rung, cfg.rungs[nxt], nxt)
            nxt += 1

    rungs: list[Rung] = []
    resumed: list[int] = []
    best, since, stopped = -1, 0, False
    for i, spec in enumerate(cfg.rungs):
        checkpoint()   # the request's budget / cancellation, between rungs
        top_up()
        yield {"rung": i, "model": spec.name, "status": "started", "utility": None, "learnability": None,
               "seconds": None}
        if i in pending:
            rung, model = pending.pop(i)()
            if out is not None:
                save_rung(out, key, spec, rung, model)
            status = "done"
        else:
            rung, status = load_rung(out, key, i, spec), "resumed"
            resumed.append(i)
        rungs.append(rung)
        yield {"rung": i, "model": spec.name, "status": status, "utility": rung.utility,
               "learnability": rung.learnability, "seconds": rung.seconds}
        if best < 0 or rung.utility > rungs[best].utility + cfg.min_improvement:
            best, since = i, 0
        else:
            since += 1
        if since >= cfg.patience and i + 1 < len(cfg.rungs):
            stopped = True
            break
    pending.clear()   # speculative rungs past the stop: their results are not used
    if stopped:
        for j in range(len(rungs), len(cfg.rungs)):
            yield {"rung": j, "model": cfg.rungs[j].name, "status": "skipped", "utility": None,
                   "learnability": None, "seconds": None}
    oof = yield from _out_of_fold(cfg, data, best, out, key, submit)
    result = CascadeResult(task, "accuracy" if classes else "r2", rungs, best, oof, classes,
                           data.y_syn if classes else None, stopped, resumed)
    if out is not None:
        atomic_write_json(out / "cascade.json", result.to_json())
    yield {"rung": best, "model": cfg.rungs[best].name, "status": "finished", "utility": rungs[best].utility,
           "learnability": rungs[best].learnability, "seconds": sum(r.seconds for r in rungs), "result": result}


def _out_of_fold(cfg: CascadeConfig, data: CascadeData, best: int, out: Path | None, key: str,
                 submit: Submit) -> Iterator[dict]:
    """Cross-validated outputs of the best rung for every synthetic row (checkpointed as oof.npz)."""
    spec = cfg.rungs[best]
    tag = oof_tag(key, best, spec)
    if out is not None and (done := load_oof(out, tag)) is not None:
        return done
    t0 = time.perf_counter()
    gets = [submit(out_of_fold, spec, f) for f in range(cfg.cv_folds)]
    n = len(data.y_syn)
    oof = np.zeros((n, data.n_classes)) if data.n_classes else np.zeros(n)
    for get in gets:
        checkpoint()
        test, values = get()
        oof[test] = values
    if out is not None:
        save_oof(out, tag, oof)
    yield {"rung": best, "model": spec.name, "status": "out_of_fold", "utility": None, "learnability": None,
           "seconds": round(time.perf_counter() - t0, 4)}
    return oof


def train_cascade(real: pd.DataFrame, synth: pd.DataFrame, label: str, config: CascadeConfig | dict | None = None,
                  *, out_dir: str | Path | None = None, on_event: Callable[[dict], None] | None = None,
                  categorical: list[str] | tuple[str, ...] | None = None, runner: Runner | None = None,
                  **overrides: Any) -> CascadeResult:
    """Climb the ladder to the end (or the early stop); `on_event` sees every progress event."""
    for event in climb(real, synth, label, config, out_dir=out_dir, categorical=categorical, runner=runner,
                       **overrides):
        if event["status"] == "finished":
            return event["result"]
        if on_event is not None:
            on_event(event)
    raise RuntimeError("the cascade ended without a result")   # unreachable: climb always finishes


# ---------------------------------------------------------------- confident learning on cascade probabilities

def cascade_label_issues(result: CascadeResult) -> tuple[np.ndarray, np.ndarray, list[str], dict[int, str]]:
    """(score = 1 - p(given label), issue mask, reasons, {row: confident class}) by localize's confident
    learning, on the cascade's out-of-sample probabilities instead of localize's logistic model."""
    if result.labels is None:
        raise InputError("task", "label issues need a classification cascade", "classification")
    probs, labels, classes = result.oof, result.labels, result.classes
    issues, confident, _ = confident_learning(probs, labels)
    given = probs[np.arange(len(labels)), labels]
    model = result.rungs[result.best].model
    reasons = [f"label issue: labelled {classes[lab]!r} but the cascade's {model} says {classes[c]!r} "
               f"(p={probs[i, c]:.2f}, p(given)={given[i]:.2f})" if c >= 0 else
               f"label: labelled {classes[lab]!r}, p(given)={given[i]:.2f}"
               for i, (lab, c) in enumerate(zip(labels, confident))]
    return 1 - given, issues, reasons, {int(i): classes[confident[i]] for i in np.flatnonzero(issues)}


def localize_with_cascade(real: pd.DataFrame, synth: pd.DataFrame, result: CascadeResult,
                          config: LocalizerConfig | dict | None = None, *,
                          categorical: list[str] | tuple[str, ...] | None = None, **overrides: Any) -> Localization:
    """localize() for memorised rows and outliers, with label issues from the cascade's probabilities."""
    loc = localize(real, synth, config, label=None, categorical=categorical, **overrides)
    score, issues, reasons, suggestions = cascade_label_issues(result)
    loc.scores["label_issue"], loc.flagged["label_issue"] = score, np.flatnonzero(issues)
    rows = {r.index: r for r in loc.rows}
    for i in np.flatnonzero(issues):
        row = FlaggedRow(int(i), float(score[i]), reasons[i], "label_issue")
        if int(i) in rows:
            old = rows[int(i)]
            top = row if row.score > old.score else old
            row = FlaggedRow(top.index, top.score, f"{old.reason}; {row.reason}", f"{old.kind},label_issue")
        rows[int(i)] = row
    limit = validated(LocalizerConfig, config, **overrides).max_rows
    loc.rows = sorted(rows.values(), key=lambda r: (-r.score, r.index))[:limit]
    loc.suggested_labels = suggestions
    return loc
