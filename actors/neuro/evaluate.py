"""The NeuroFMX evaluation: every method scored on the held-out trials against the ground truth.

Protocol (issue 14; docs/neurofmx.md):
- inputs of a test trial: its held-in spikes (the first N_in neurons) and, for NeuroFMX, its LFP / EEG;
  never its condition label (except the PSTH oracle, marked as such) nor its held-out neurons;
- rate R^2: predicted vs true expected counts over every (test trial, bin), per neuron, averaged
  (`rate_r2` over all neurons, `rate_r2_heldin` over the held-in ones);
- co-bps: NLB bits per spike of the held-out neurons on the test trials; `co_bps_ceiling` is the
  true rates' score, `co_bps_frac` = co-bps / ceiling;
- latent R^2: a ridge probe from the method's per-bin features to the true latents (Lorenz state),
  fit on the training trials, scored on the test trials; few-shot: the same probe fit on K training
  trials (a seeded draw), K in `few_shot_k`;
- rate readout (`readout`): `glm` (default) reads NeuroFMX's rates from its per-bin features with a Poisson
  GLM of every neuron fit on the training trials' spikes (`glm_alpha`; NLB's readout of held-out neurons
  used for all neurons: a frozen encoder with a linear-exponential head), its own masked-prediction
  head's rates reported beside it as "[native readout]"; the baselines keep their own rate estimates
  (their published protocols) with the same GLM of their features beside them as "[GLM readout]"
  (CEBRA has no rates of its own: its one row is that GLM).
  `native` scores the methods' own rates alone. Targets read NeuroFMX's row under the spec's readout;
- NeuroFMX also without LFP / EEG (fusion gain = co-bps(spikes + LFP) - co-bps(spikes)) and with each
  modality dropped with probability `dropout_p` per test trial, keeping at least one (robustness =
  relative loss of rate R^2 and co-bps).
Targets are those of issue 14; `targets()` says which are met.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from actors.neuro.baselines import (
    BaselineFit,
    fit_cebra,
    fit_psth_oracle,
    fit_smoothing,
    train_sequence_model,
)
from actors.neuro.config import EvalSpec
from actors.neuro.datasets import NeuroData
from actors.neuro.metrics import (
    bits_per_spike,
    fit_glm_readout,
    fit_ridge,
    flat,
    predict_poisson_glm,
    predict_ridge,
    r2,
)

__all__ = ["TARGETS", "Predictor", "check_layout", "eval_device", "evaluate", "glm_readout", "load_neurofmx", "markdown_table", "model_predictor", "score",
           "targets", "trial_inputs"]

# (fields, dict) -> (expected counts [n, T, N], features [n, T, F]); fields = spikes [n, T, N_in], lfp, eeg;
# `active` [n, M] bool or None (every modality)
Predictor = Callable[[dict[str, np.ndarray], np.ndarray | None], tuple[np.ndarray, np.ndarray]]

TARGETS = {"rate_r2": 0.90, "latent_r2": 0.90, "co_bps_frac": 0.90, "fusion_gain_bps": 0.02, "dropout_loss_frac": 0.10}


def score(data: NeuroData, counts: np.ndarray, features: np.ndarray | None, train_features: np.ndarray | None,
          spec: EvalSpec) -> dict[str, Any]:
    """The metrics of one method's test-trial predictions (module docstring): `rate_scores` of the counts
    and the latent / few-shot probes of the features."""
    out = rate_scores(data, counts)
    te, tr = data.is_test, ~data.is_test
    if features is not None and train_features is not None:
        W, b = fit_ridge(train_features, data.latents[tr], spec.ridge_alpha)
        out["latent_r2"] = r2(flat(data.latents[te]), predict_ridge(flat(features), W, b))
        rng = np.random.default_rng(spec.seed)
        order = rng.permutation(int(tr.sum()))
        few = {}
        for k in spec.few_shot_k:
            pick = order[:min(k, len(order))]
            W, b = fit_ridge(train_features[pick], data.latents[tr][pick], spec.ridge_alpha)
            few[str(k)] = r2(flat(data.latents[te]), predict_ridge(flat(features), W, b))
        out["few_shot_latent_r2"] = few
    return out


def rate_scores(data: NeuroData, counts: np.ndarray) -> dict[str, Any]:
    """Rate R^2 (all and held-in neurons) and co-bps (and its share of the ceiling) of test-trial counts."""
    te, h = data.is_test, data.heldout
    true = data.expected_counts[te]
    out: dict[str, Any] = {"rate_r2": r2(true, counts), "rate_r2_heldin": r2(true[..., ~h], counts[..., ~h])}
    if h.any():
        out["co_bps"] = bits_per_spike(data.spikes[te][..., h], counts[..., h])
        ceiling = bits_per_spike(data.spikes[te][..., h], true[..., h])
        out["co_bps_frac"] = out["co_bps"] / ceiling if ceiling > 0 else None
    return out


def glm_readout(data: NeuroData, train_features: np.ndarray, features: np.ndarray, spec: EvalSpec,
                device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(expected counts [n_test, T, N], penalty per neuron): a Poisson GLM of the training trials' spikes
    (every neuron) on the method's training features, applied to its test features; the penalty is the
    spec's `glm_alpha`, or chosen per neuron by CV over the training trials (`glm_alpha: cv`)."""
    W, b, alpha = fit_glm_readout(train_features, data.spikes[~data.is_test], spec.glm_alpha, spec.glm_alphas,
                                  spec.glm_folds, spec.seed, device)
    return predict_poisson_glm(features, W, b), alpha


def trial_inputs(data: NeuroData, which: np.ndarray, n_in: int) -> dict[str, np.ndarray]:
    """The model inputs of the trials `which` (float32): spikes, each field, and the held-in spike columns."""
    out = {"spikes": data.spikes[which].astype(np.float32)}
    for name, x in data.fields.items():
        out[name] = x[which].astype(np.float32)
    out["spikes_heldin"] = out["spikes"][..., :n_in]
    return out


def eval_device(spec: EvalSpec) -> str:
    """The device the model and the GRU / NDT / CEBRA baselines run on: `auto` is CUDA when it is there,
    else the CPU; `cuda` without CUDA is an InputError naming `device`."""
    import torch

    from actors.common.errors import InputError

    if spec.device == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "cuda was asked for but torch sees no CUDA device", "cpu or auto")
    if spec.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec.device


def model_predictor(model: Any, modalities: list[str], n_neurons: int, batch_size: int = 64,
                    device: str = "cpu", **predict_kwargs: Any) -> Predictor:
    """A Predictor around a model with `predict(batch, active, **predict_kwargs) -> {"rates", "features"}`
    (NeuroFMX). The held-out neurons' columns are zeroed before the model sees them (it never reads them)."""
    import torch

    def predict(fields: dict[str, np.ndarray], active: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = len(fields["spikes_heldin"])
        counts, feats = [], []
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            spikes = np.zeros(fields["spikes_heldin"][sl].shape[:2] + (n_neurons,), np.float32)
            spikes[..., :fields["spikes_heldin"].shape[-1]] = fields["spikes_heldin"][sl]
            batch = {"spikes": torch.as_tensor(spikes, device=device)}
            for m in modalities[1:]:
                batch[m] = torch.as_tensor(fields[m][sl], device=device)
            act = None if active is None else active[sl]
            out = model.predict(batch, act, **predict_kwargs)
            counts.append(out["rates"].double().cpu().numpy())
            feats.append(out["features"].double().cpu().numpy())
        return np.concatenate(counts), np.concatenate(feats)

    return predict


def _dropout_masks(n: int, M: int, p: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 1])
    keep = rng.random((n, M)) >= p
    for i in np.flatnonzero(~keep.any(axis=1)):
        keep[i, rng.integers(M)] = True
    return keep


def evaluate(data: NeuroData, spec: EvalSpec, model: Predictor | None = None, modalities: list[str] | None = None,
             name: str = "neurofmx", log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score the model (if given) and the spec's baselines on `data`'s test trials; returns
    {"rows": [...], "fusion": {...}, "dropout": {...}, "ceiling": ..., "targets": {...}, "baselines": {...}}."""
    say = log or (lambda s: None)
    te, tr, h = data.is_test, ~data.is_test, data.heldout
    n_in = int((~h).sum())
    test_in, train_in = trial_inputs(data, te, n_in), trial_inputs(data, tr, n_in)
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    ceiling = bits_per_spike(data.spikes[te][..., h], data.expected_counts[te][..., h]) if h.any() else None
    true_row = {"method": "true rates (ceiling)", "inputs": "ground truth", **score(data, data.expected_counts[te], None,
                                                                                    None, spec)}
    rows.append(true_row)
    predictions: dict[str, np.ndarray] = {}
    if model is not None:
        mods = modalities or ["spikes"]
        variants = {f"{name} ({'+'.join(mods)})": None}
        if len(mods) > 1:
            variants[f"{name} (spikes only)"] = np.array([[m == "spikes" for m in mods]] * int(te.sum()))
            if "lfp" in mods:
                variants[f"{name} (spikes+lfp)"] = np.array([[m in ("spikes", "lfp") for m in mods]] * int(te.sum()))
            variants[f"{name} ({spec.dropout_p:g} modality dropout)"] = _dropout_masks(int(te.sum()), len(mods),
                                                                                     spec.dropout_p, spec.seed)
        _, train_feats = model(train_in, None)
        native_rows = []
        for label, active in variants.items():
            say(f"scoring {label}")
            counts, feats = model(test_in, active)
            tr_feats = train_feats if active is None else model(train_in, _train_active(active, int(tr.sum()), spec))[1]
            read, how = _read(data, spec, counts, tr_feats, feats)
            predictions[label] = read
            scored = score(data, read, feats, tr_feats, spec)
            rows.append({"method": label, "inputs": _inputs(mods, active), **scored, **how})
            if active is None and spec.readout == "glm":     # same features: same probes, other rates
                native_rows.append({"method": f"{label} [native readout]", "inputs": _inputs(mods, None),
                                    **scored, **rate_scores(data, counts)})
        full = rows[1]
        by = {r["method"]: r for r in rows}
        if len(mods) > 1:
            spikes_only = by[f"{name} (spikes only)"]
            pair = by.get(f"{name} (spikes+lfp)")
            extra["fusion"] = {
                "co_bps_gain_spikes_lfp": (pair["co_bps"] - spikes_only["co_bps"]) if pair and "co_bps" in pair else None,
                "co_bps_gain_all": full.get("co_bps", np.nan) - spikes_only.get("co_bps", np.nan),
                "rate_r2_gain_all": full["rate_r2"] - spikes_only["rate_r2"]}
            drop = by[f"{name} ({spec.dropout_p:g} modality dropout)"]
            extra["dropout"] = {"p": spec.dropout_p,
                                "rate_r2_loss_frac": _loss_frac(full["rate_r2"], drop["rate_r2"]),
                                "co_bps_loss_frac": _loss_frac(full.get("co_bps"), drop.get("co_bps"))}
        rows.extend(native_rows)
    fits: dict[str, BaselineFit] = {}
    for b in spec.baselines:
        say(f"fitting baseline {b}")
        if b == "smoothing":
            fits[b] = fit_smoothing(data.spikes[tr], test_in["spikes_heldin"], n_in, data.bin_s, spec.smoothing_sigmas_ms)
        elif b == "psth_oracle":
            fits[b] = fit_psth_oracle(data.spikes[tr], data.condition[tr], data.condition[te], data.bin_s,
                                      spec.smoothing_sigmas_ms)
        elif b == "cebra":
            fits[b] = fit_cebra(data.spikes[tr], n_in, test_in["spikes_heldin"], iterations=spec.cebra_iterations,
                                dims=spec.cebra_dims, glm_alpha=spec.glm_alpha, glm_alphas=tuple(spec.glm_alphas),
                                glm_folds=spec.glm_folds, seed=spec.seed, device=eval_device(spec))
        else:
            fits[b] = train_sequence_model(b, data.spikes[tr], n_in, test_in["spikes_heldin"], steps=spec.baseline_steps,
                                           hidden=spec.baseline_hidden, lr=spec.baseline_lr, batch=spec.baseline_batch,
                                           seed=spec.seed, device=eval_device(spec))
        f = fits[b]
        label = b + (" (uses condition labels)" if b == "psth_oracle" else "")
        inputs = "spikes" + (" + condition" if b == "psth_oracle" else "")
        scored = score(data, f.counts, f.features, f.train_features, spec)
        rows.append({"method": label, "inputs": inputs, **scored})
        if spec.readout == "glm" and f.own_rates:          # a GLM twin only beside rates of the method's own
            glm, how = _read(data, spec, f.counts, f.train_features, f.features)
            rows.append({"method": f"{label} [GLM readout]", "inputs": inputs, **scored, **rate_scores(data, glm), **how})
        predictions[b] = f.counts
    result = {"rows": rows, "co_bps_ceiling": ceiling, **extra,
              "baselines": {k: v.info for k, v in fits.items()},
              "n_train": int(tr.sum()), "n_test": int(te.sum()), "n_heldout": int(h.sum()), "dataset": data.dataset}
    result["targets"] = targets(result, name)
    result["_predictions"] = predictions
    return result


def _read(data: NeuroData, spec: EvalSpec, counts: np.ndarray, train_features: np.ndarray,
          features: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """(expected counts under the spec's readout: the method's own or the GLM of its features, the
    readout's row fields: the GLM's median penalty over neurons)."""
    if spec.readout != "glm":
        return counts, {}
    read, alpha = glm_readout(data, train_features, features, spec, eval_device(spec))
    return read, {"glm_alpha": float(np.median(alpha))}


def _train_active(active: np.ndarray, n: int, spec: EvalSpec) -> np.ndarray:
    """The probes and the readout of a variant are fit on training trials seen the same way: the first
    row's pattern for a fixed subset; for random dropout (rows differ) a fresh draw with the same p."""
    if (active == active[0]).all():
        return np.repeat(active[:1], n, axis=0)
    return _dropout_masks(n, active.shape[1], spec.dropout_p, spec.seed + 1)


def _inputs(mods: list[str], active: np.ndarray | None) -> str:
    if active is None:
        return "+".join(mods)
    if (active == active[0]).all():
        return "+".join(m for m, a in zip(mods, active[0]) if a)
    return f"random subsets of {'+'.join(mods)}"


def _loss_frac(full: float | None, other: float | None) -> float | None:
    if full is None or other is None or not np.isfinite(full) or full == 0:
        return None
    return float((full - other) / abs(full))


def targets(result: dict[str, Any], name: str = "neurofmx") -> dict[str, Any]:
    """Issue 14's targets for the model's full-input row: {target: {"value", "target", "met"}}."""
    rows = [r for r in result["rows"] if r["method"].startswith(name + " (") and "only" not in r["method"]]
    if not rows:
        return {}
    full = rows[0]
    vals = {"rate_r2": full.get("rate_r2"), "latent_r2": full.get("latent_r2"), "co_bps_frac": full.get("co_bps_frac"),
            "fusion_gain_bps": (result.get("fusion") or {}).get("co_bps_gain_spikes_lfp"),
            "dropout_loss_frac": (result.get("dropout") or {}).get("rate_r2_loss_frac")}
    out = {}
    for k, v in vals.items():
        goal = TARGETS[k]
        met = None if v is None else (v <= goal if k == "dropout_loss_frac" else v >= goal)
        out[k] = {"value": v, "target": goal, "met": met}
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if not np.isfinite(v) else f"{v:.3f}"
    return str(v)


def markdown_table(result: dict[str, Any]) -> str:
    """The results as markdown: the metrics table, fusion / dropout, targets."""
    ks = [str(k) for k in next((r["few_shot_latent_r2"] for r in result["rows"] if "few_shot_latent_r2" in r), {})]
    head = ["method", "inputs", "rate R2 (all)", "rate R2 (held-in)", "co-bps", "co-bps / ceiling", "latent R2"]
    head += [f"latent R2 K={k}" for k in ks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        few = r.get("few_shot_latent_r2", {})
        cells = [r["method"], r.get("inputs", ""), r.get("rate_r2"), r.get("rate_r2_heldin"), r.get("co_bps"),
                 r.get("co_bps_frac"), r.get("latent_r2")] + [few.get(k) for k in ks]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    lines.append("")
    lines.append(f"{result['dataset']}: {result['n_train']} training / {result['n_test']} test trials, "
                 f"{result['n_heldout']} held-out neurons; co-bps ceiling (true rates) {_fmt(result['co_bps_ceiling'])}.")
    if result.get("fusion"):
        f = result["fusion"]
        lines.append(f"Fusion gain: co-bps(spikes+LFP) - co-bps(spikes) = {_fmt(f['co_bps_gain_spikes_lfp'])} bits/spike; "
                     f"all modalities: {_fmt(f['co_bps_gain_all'])} bits/spike, rate R2 {_fmt(f['rate_r2_gain_all'])}.")
    if result.get("dropout"):
        d = result["dropout"]
        lines.append(f"Modality dropout p={d['p']:g}: relative loss of rate R2 {_fmt(d['rate_r2_loss_frac'])}, "
                     f"of co-bps {_fmt(d['co_bps_loss_frac'])}.")
    if result.get("targets"):
        lines += ["", "| target | value | goal | met |", "|---|---|---|---|"]
        for k, t in result["targets"].items():
            goal = ("<= " if k == "dropout_loss_frac" else ">= ") + f"{t['target']:g}"
            lines.append(f"| {k} | {_fmt(t['value'])} | {goal} | {'-' if t['met'] is None else ('yes' if t['met'] else 'no')} |")
    return "\n".join(lines) + "\n"


def load_neurofmx(path: str | Path) -> tuple[Any, dict[str, Any], Path]:
    """(model on the CPU in eval mode, checkpoint meta, checkpoint dir) of a run or checkpoint directory."""
    import torch

    from actors.common.errors import InputError
    from actors.trainer import build_model, latest_checkpoint, read_meta

    p = Path(path)
    if not p.is_dir():
        raise InputError("--checkpoint", f"no such directory {str(p)!r}", "a run directory or a ckpt-<step> directory")
    if not (p / "meta.json").is_file():
        root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        latest = latest_checkpoint(root)
        if latest is None:
            raise InputError("--checkpoint", f"{p} holds no complete checkpoint", "a run directory of jobs.train")
        p = latest
    meta = read_meta(p, verify=False)   # the weights alone suffice (a copy without optim.pt / RNG states)
    if not (p / "model.pt").is_file():
        raise InputError("--checkpoint", f"{p} has no model.pt (a {meta.get('strategy')} checkpoint); evaluation "
                         "reads full state dicts (ddp / fsdp2)", "a ddp or fsdp2 checkpoint")
    size = meta.get("files", {}).get("model.pt")
    if size is not None and (p / "model.pt").stat().st_size != size:
        raise InputError("--checkpoint", f"{p / 'model.pt'} has {(p / 'model.pt').stat().st_size} bytes, its "
                         f"manifest says {size}", "a complete checkpoint")
    name = meta["model"]["name"]
    if name != "neurofmx":
        raise InputError("--checkpoint", f"{p} holds model {name!r}, not neurofmx", "a NeuroFMX checkpoint")
    model = build_model(name, meta["model"]["cfg"])
    try:
        model.load_state_dict(torch.load(p / "model.pt", map_location="cpu", weights_only=True))
    except RuntimeError as exc:
        raise InputError("--checkpoint", f"{p / 'model.pt'} does not fit model {name!r}: {exc}") from None
    return model.eval(), meta, p


def check_layout(cfg: Any, data: Any, ckpt: Path) -> None:
    """The model's modality sizes must be the data's (else an InputError naming --checkpoint)."""
    from actors.common.errors import InputError

    N = data.spikes.shape[-1]
    problems = []
    if cfg.spikes.n_neurons != N:
        problems.append(f"{cfg.spikes.n_neurons} neurons, the data {N}")
    if cfg.spikes.n_heldout != int(data.heldout.sum()):
        problems.append(f"{cfg.spikes.n_heldout} held-out neurons, the data {int(data.heldout.sum())}")
    if abs(cfg.spikes.bin_s - data.bin_s) > 1e-12:
        problems.append(f"bins of {cfg.spikes.bin_s} s, the data {data.bin_s} s")
    for m in ("lfp", "eeg"):
        f = getattr(cfg, m)
        if f is None:
            continue
        if m not in data.fields:
            problems.append(f"a {m} input the data lacks")
        elif f.n_channels != data.fields[m].shape[-1] or abs(f.rate_hz - data.field_rate_hz[m]) > 1e-9:
            problems.append(f"{m} {f.n_channels} ch at {f.rate_hz} Hz, the data {data.fields[m].shape[-1]} ch at "
                            f"{data.field_rate_hz[m]} Hz")
    if problems:
        raise InputError("--checkpoint", f"{ckpt} does not match the data: the model has " + "; ".join(problems),
                         "a model trained on this dataset's layout")
