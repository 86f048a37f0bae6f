"""EqProp's multi-objective architecture search on Ray Tune: the Pareto front of accuracy, inference time,
training memory and FLOPs.

    python -m jobs.tune_eqprop --config configs/train/search_eqprop_digits.yaml --data runs/eqprop/digits --out runs/tune_eqprop
    ray job submit --working-dir . -- python -m jobs.tune_eqprop --config configs/train/search_eqprop_mnist.yaml \\
        --data runs/eqprop/mnist5k --out runs/tune_eqprop_mnist

--data: a directory with train/ and test/ shards (python -m jobs.eqprop_data). parse -> search spec and
shards (checked before Ray starts) -> tune.eqprop.search_pareto -> write. Writes DIR/pareto.json (every
trial's config and objectives, the front), DIR/pareto.md (the front as a table), DIR/pareto.png, the Tune
experiment under DIR/tune/ and each trial's run under DIR/trials/<trial id>/. Protocol: tune/eqprop.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

from jobs import cli

SUMMARY_KEYS = ("name", "n_trials", "n_done", "front", "wall_s")


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="search YAML (configs/train/search_eqprop_*.yaml)",
                        set_example="num_samples=2 train.steps=440")
    ap.add_argument("--data", required=True, help="directory with train/ and test/ shards (jobs.eqprop_data)")
    args = ap.parse_args(argv)

    from actors.trainer.shards import ShardDataset
    from tune.eqprop import search_pareto
    from tune.trainer import load_search_spec

    def load():
        spec = load_search_spec(args.config, cli.parse_set(args.set))
        for split in ("train", "test"):
            ShardDataset(Path(args.data) / split)
        return spec

    return cli.run_job(load, lambda spec: search_pareto(spec, args.data, args.out), address=args.address,
                       keys=SUMMARY_KEYS)


if __name__ == "__main__":
    sys.exit(main())
