"""Train a registered model on shards with Ray Train (DDP, FSDP2 or DeepSpeed ZeRO-3), resumable exactly.

    python -m jobs.train --config configs/train/neurofmx_tiny.yaml --data DIR --out runs/train [--resume [RUN]]
    ray job submit --working-dir . -- python -m jobs.train --config configs/train/X.yaml --data DIR --out DIR

parse -> spec and shard directory (checked before Ray starts) -> actors.trainer.pool.run_training ->
write. Each run is a new directory DIR/<model>-<UTC time>-<hex> (never an old run reused by accident);
`--resume` continues the newest run in DIR (or `--resume RUN`) from its latest checkpoint, after
checking it trains the same model on the same data in the same order. A run directory holds run.json,
checkpoints/ckpt-<step>/, metrics.jsonl (every logged step), events.jsonl (each start or restart),
loss.png and summary.json. Metrics also go to Ray's dashboard (attractor_trainer_loss, _step,
_tokens_total, _step_seconds). Engine and file formats: docs/trainer.md.
"""
from __future__ import annotations

import sys

from jobs import cli

SUMMARY_KEYS = ("run", "run_dir", "steps", "final", "resumed_from", "latest_checkpoint", "restarts", "loss_png",
                "wall_s")


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="train YAML (configs/train/*.yaml)",
                        out_help="directory of runs (each run gets its own subdirectory)",
                        set_example="steps=200 strategy=fsdp2 workers.num_workers=2")
    ap.add_argument("--data", required=True, help="shard directory (written by jobs.neuro_data or write_shards)")
    ap.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN",
                    help="continue the newest run in --out (or RUN) from its latest checkpoint")
    args = ap.parse_args(argv)

    from actors.trainer.config import TrainSpec
    from actors.trainer.shards import ShardDataset

    def load() -> TrainSpec:
        spec = cli.load_spec(TrainSpec, args.config, cli.parse_set(args.set))
        ShardDataset(args.data)   # missing shards or index: exit 2 before Ray starts
        return spec

    def run(spec: TrainSpec) -> dict:
        from actors.trainer.pool import run_training

        return run_training(spec, args.data, args.out, resume=args.resume)

    return cli.run_job(load, run, address=args.address, keys=SUMMARY_KEYS)


if __name__ == "__main__":
    sys.exit(main())
