"""neuro: synthetic neural recordings with ground truth, their scores and the baselines NeuroFMX is
compared with (docs/neurofmx.md). Engine code: no Ray, no model of the trainer.

    from actors.neuro import NeuroDataSpec, make_dataset, bits_per_spike, r2
    data = make_dataset(NeuroDataSpec(dataset="lorenz", seed=0))   # spikes, rates_hz, latents, lfp, eeg
    test, h = data.is_test, data.heldout
    r2(data.expected_counts[test], predicted_counts)                 # single-trial rate R^2
    bits_per_spike(data.spikes[test][..., h], predicted_counts[..., h])   # co-bps (NLB)

Modules: config (NeuroDataSpec, EvalSpec), datasets (Lorenz spiking, chaotic RNN, LFP/EEG from the
same latents with 1/f noise), metrics (R^2, Poisson NLL, co-bps, ridge probes), export (the
jobs.neuro_data directory: trainer shards + ground truth), baselines (Gaussian smoothing + GLM, condition
PSTH oracle, GRU sequential autoencoder, NDT-like masked transformer), evaluate (the jobs.neuro_eval
protocol and table), plots. Names are imported
on first use (`import actors.neuro.config` stays light).
"""
from __future__ import annotations

from actors.common.lazy import lazy_exports

_EXPORTS = {
    "actors.neuro.config": ("ChaoticRNNConfig", "DatasetKind", "EvalSpec", "FieldConfig", "LorenzConfig",
                            "NeuroDataSpec"),
    "actors.neuro.datasets": ("NeuroData", "chaotic_rnn_states", "field_channels", "lorenz_euler", "lorenz_latents",
                              "make_dataset", "pink_noise", "poisson_spikes", "split_trials", "trial_samples"),
    "actors.neuro.metrics": ("bits_per_spike", "fit_ridge", "flat", "poisson_nll", "predict_ridge", "probe_r2", "r2"),
    "actors.neuro.export": ("GROUND_TRUTH", "model_layout", "read_dataset", "write_dataset"),
    "actors.neuro.plots": ("dataset_preview", "metric_bars", "rate_examples"),
    "actors.neuro.baselines": ("BaselineFit", "GRUSAE", "NDT", "fit_psth_oracle", "fit_smoothing", "gaussian_smooth",
                               "train_sequence_model"),
    "actors.neuro.evaluate": ("TARGETS", "Predictor", "evaluate", "markdown_table", "model_predictor", "score", "targets"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
