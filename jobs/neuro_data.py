"""Synthetic neural datasets with ground truth (Lorenz spiking, chaotic RNN; LFP / EEG from the same
latents) as trainer shards.

    python -m jobs.neuro_data --config configs/neuro/lorenz.yaml --out runs/neuro/lorenz
    python -m jobs.train --config configs/train/neurofmx_tiny.yaml --data runs/neuro/lorenz/train --out ...

Writes OUT/train/ and OUT/test/ (shard directories), OUT/ground_truth.npz, OUT/summary.json and
OUT/preview.png (actors/neuro/export.py). No Ray: generation takes about a second. Rerunning with the
same spec rewrites identical files; another spec in the same OUT is refused (exit 2).
"""
from __future__ import annotations

import sys
from pathlib import Path

from jobs import cli


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="dataset YAML (configs/neuro/*.yaml)", config_required=False,
                        set_example="lorenz.n_conditions=10", address=False)
    args = ap.parse_args(argv)
    from actors.neuro import NeuroDataSpec, write_dataset

    keys = ("dataset", "n_trials", "n_train", "n_test", "mean_counts_per_bin", "co_bps_ceiling_test", "fields")
    return cli.run_job(lambda: cli.load_spec(NeuroDataSpec, args.config, cli.parse_set(args.set)),
                       lambda spec: write_dataset(spec, Path(args.out)), ray=False, keys=keys)


if __name__ == "__main__":
    sys.exit(main())
