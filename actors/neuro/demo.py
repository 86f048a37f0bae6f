"""The demo's NeuroFMX stage: the Lorenz spiking set, `neurofmx_tiny` trained for about a minute on the
CPU, and its held-out single-trial rate R² beside Gaussian smoothing's (the baseline a user would try
first; the issue's measured value is <= 0) and the true-rate ceiling of co-bps. Rates are read both ways
`jobs.neuro_eval` reads them: the model's own masked-prediction head, and a Poisson GLM of its features
fit on the training trials (the evaluation's default readout).

Why this shape: a user of `make demo` sees the whole path (data with ground truth -> the trainer engine ->
masked-inference rates -> the evaluation protocol of `jobs.neuro_eval`) in one short stage; the long
training and the learned baselines (GRU, NDT-like) stay in `jobs.neuro_eval` (docs/neurofmx.md).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ["neurofmx_demo_stage"]


def neurofmx_demo_stage(out_dir: str | Path, *, steps: int = 250, seed: int = 0) -> dict[str, Any]:
    """Write the Lorenz set, train `neurofmx_tiny` for `steps` steps (one torch thread, ~0.3 s a step on
    the 2-core CI machine), score its masked-inference rates on the test trials beside Gaussian smoothing
    (rates and co-bps only: the probes, modality variants and learned baselines are jobs.neuro_eval's); writes
    OUT/neurofmx_demo.json and OUT/rates.png and returns {"rate_r2", "smoothing_rate_r2", "co_bps", "rate_r2_glm",
    "co_bps_glm",
    "co_bps_ceiling", "steps", "wall_s", ...}. torch's thread count is restored after."""
    import torch

    out = Path(out_dir)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a small model: a second thread only contends with Ray's workers
    try:
        return _stage(out, int(steps), int(seed), t0)
    finally:
        torch.set_num_threads(threads)


def _stage(out: Path, steps: int, seed: int, t0: float) -> dict[str, Any]:
    from actors.common.config import apply_overrides, load_yaml
    from actors.common.storage import atomic_write_json
    from actors.neuro import NeuroDataSpec, read_dataset, write_dataset
    from actors.neuro.baselines import fit_smoothing
    from actors.neuro.config import EvalSpec
    from actors.neuro.evaluate import (
        check_layout,
        glm_readout,
        load_neurofmx,
        model_predictor,
        score,
        trial_inputs,
    )
    from actors.neuro.plots import rate_examples
    from actors.trainer import TrainSpec, train
    from configs import preset

    raw_data = load_yaml(preset("neuro", "lorenz.yaml").read_text())
    write_dataset(NeuroDataSpec.model_validate(apply_overrides(raw_data, {"seed": seed})), out / "data")
    raw = load_yaml(preset("train", "neurofmx_tiny.yaml").read_text())
    over = {"steps": steps, "seed": seed, "log_every": max(1, steps // 10), "checkpoint.every": steps,
            "checkpoint.keep": 1, "scheduler.warmup_steps": min(50, max(1, steps // 5))}
    spec = TrainSpec.model_validate(apply_overrides(raw, over))
    t_train = time.perf_counter()
    train(spec, out / "data" / "train", out / "run", device="cpu", log=None)
    train_s = time.perf_counter() - t_train
    model, _, ckpt = load_neurofmx(out / "run")
    data, _ = read_dataset(out / "data")
    check_layout(model.cfg, data, ckpt)
    # a coarse CV grid (9 GLM fits, not 21) of the spikes stream's features: every stream's (jobs.neuro_eval's
    # default) triples them and the GLM's Hessians cost 9x on this CPU
    ev = EvalSpec(seed=seed, glm_alphas=[1e-3, 3e-2, 1.0], feature_streams="spikes")
    te, n_in = data.is_test, int((~data.heldout).sum())
    inputs = trial_inputs(data, te, n_in)
    predict = model_predictor(model, model.modalities, data.spikes.shape[-1], samples=ev.mask_samples,
                              feature_streams=ev.feature_streams)
    counts, feats = predict(inputs, None)
    _, train_feats = predict(trial_inputs(data, ~te, n_in), None)
    glm_counts, _ = glm_readout(data, train_feats, feats, ev)
    glm = score(data, glm_counts, None, None, ev)
    smooth_fit = fit_smoothing(data.spikes[~te], inputs["spikes_heldin"], n_in, data.bin_s, ev.smoothing_sigmas_ms)
    mine, smooth = score(data, counts, None, None, ev), score(data, smooth_fit.counts, None, None, ev)
    ceiling = score(data, data.expected_counts[te], None, None, ev)
    rate_examples(data.expected_counts[te], {"neurofmx tiny (head)": counts, "neurofmx tiny (GLM readout)": glm_counts,
                                                       "smoothing": smooth_fit.counts}, data.bin_s,
                  out / "rates.png", neurons=(0, 1))
    stage = {"dataset": "lorenz", "config": "neurofmx_tiny", "steps": steps, "seed": seed,
             "parameters": sum(p.numel() for p in model.parameters()), "n_test": int(te.sum()),
             "rate_r2": mine["rate_r2"], "smoothing_rate_r2": smooth["rate_r2"], "co_bps": mine["co_bps"],
             "smoothing_co_bps": smooth["co_bps"],
             "rate_r2_glm": glm["rate_r2"], "co_bps_glm": glm["co_bps"], "co_bps_ceiling": ceiling["co_bps"],
             "train_s": train_s, "wall_s": time.perf_counter() - t0}
    atomic_write_json(out / "neurofmx_demo.json", stage)
    return stage
