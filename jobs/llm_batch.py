"""Batch LLM inference through Ray Data LLM (vLLM engines), resumable by shard.

    python -m jobs.llm_tiny --out runs/tiny
    python -m jobs.llm_batch --config configs/llm/tiny.yaml --set model_source=runs/tiny \\
        --prompts prompts.jsonl --out runs/batch [--profile cpu] [--shard-size 64] [--max-tokens 64]
    ray job submit --working-dir . -- python -m jobs.llm_batch --config ... --prompts ... --out DIR

prompts.jsonl: one JSON object per line, {"id": ..., "prompt": "..."} or {"id": ..., "messages": [...]}
(chat template applied), optional per-row max_tokens / temperature / top_p / top_k / seed.
Writes DIR/shards/shard-NNNNNN.parquet (id, prompt, generated_text, num_input_tokens,
num_generated_tokens, time_taken_llm_s, shard), DIR/summary.json; a rerun into DIR skips the shards
already written (atomic files) and refuses a directory holding a different run. The engine config and
the model directory are validated before Ray starts (errors name the field / path, exit 2).
"""
from __future__ import annotations

import sys
from pathlib import Path

from jobs import cli


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="engine preset (configs/llm/*.yaml)", set_example="model_source=runs/tiny")
    ap.add_argument("--prompts", required=True, help="JSONL prompts file")
    ap.add_argument("--profile", choices=["cpu", "gpu"], default=None, help="cpu: run the model on CPU workers")
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    args = ap.parse_args(argv)

    def load():
        from actors.common.config import validated
        from actors.llm.config import EngineSpec, apply_profile, check_model_source
        from actors.llm.raydata import BatchOptions, load_prompts

        spec = apply_profile(cli.load_spec(EngineSpec, args.config, cli.parse_set(args.set)), args.profile)
        check_model_source(spec)
        opts = validated(BatchOptions, shard_size=args.shard_size, batch_size=args.batch_size,
                         concurrency=args.concurrency, max_tokens=args.max_tokens, temperature=args.temperature)
        return spec, opts, load_prompts(Path(args.prompts))

    def run(loaded):
        from actors.llm.raydata import run_batch

        spec, opts, rows = loaded
        return run_batch(spec, rows, Path(args.out), opts, prompts_file=args.prompts)

    return cli.run_job(load, run, address=args.address)


if __name__ == "__main__":
    sys.exit(main())
