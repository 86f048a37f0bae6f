"""Tune NeuroFMX (or any registered model) with the trainer: ASHA or PBT over TrainSpec fields.

    python -m jobs.tune_neurofmx --config configs/train/search_neurofmx_tiny.yaml --data runs/neuro/lorenz/train \\
        --out runs/tune_nfmx [--set num_samples=16 train.steps=300]
    ray job submit --working-dir . -- python -m jobs.tune_neurofmx --config ... --data DIR --out DIR

parse -> search spec and shards (checked before Ray starts) -> tune.trainer.search -> write.
Writes DIR/search.json (every trial's sampled values, last metrics and iterations; the best), the Tune
experiment under DIR/tune/ and each trial's runs under DIR/trials/<trial id>/. Protocol: tune/trainer.py.
"""
from __future__ import annotations

import sys

from jobs import cli

SUMMARY_KEYS = ("name", "scheduler", "n_trials", "best", "wall_s")


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="search YAML (configs/train/search_*.yaml)",
                        set_example="num_samples=16 train.steps=300")
    ap.add_argument("--data", required=True, help="shard directory the trials train on")
    args = ap.parse_args(argv)

    from actors.trainer.shards import ShardDataset
    from tune.trainer import load_search_spec, search

    def load():
        spec = load_search_spec(args.config, cli.parse_set(args.set))
        ShardDataset(args.data)
        return spec

    return cli.run_job(load, lambda spec: search(spec, args.data, args.out), address=args.address, keys=SUMMARY_KEYS)


if __name__ == "__main__":
    sys.exit(main())
