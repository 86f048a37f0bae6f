"""Build the project's tiny Llama (safetensors + byte-level BPE + chat template + GGUF F32/F16/Q8_0).

    python -m jobs.llm_tiny --out runs/tiny [--seed 0] [--train-steps 120] [--no-gguf]
    serve run serve.llm:build_app model_source=runs/tiny profile=cpu     # serve it on 127.0.0.1:8000

No network and no Ray: a few seconds on one CPU thread. What is built is described in
actors/llm/tiny.py and written to DIR/tiny.json. The GGUF files need the `gguf` package (in the LLM
venv, .venv-llm); --no-gguf skips them.
"""
from __future__ import annotations

import argparse
import sys

from jobs import cli


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="model directory to write")
    ap.add_argument("--seed", type=int, default=0, help="initialisation and training seed")
    ap.add_argument("--train-steps", type=int, default=120, help="Adam steps on the built-in corpus (0: random)")
    ap.add_argument("--no-gguf", action="store_true", help="skip the GGUF copies")
    args = ap.parse_args(argv)
    if args.train_steps < 0 or args.train_steps > 100_000:
        return cli.fail(ValueError(f"--train-steps: {args.train_steps} is out of range (allowed: 0 .. 100000)"))
    from actors.llm.tiny import build_tiny

    cli.print_json(build_tiny(args.out, seed=args.seed, train_steps=args.train_steps, gguf=not args.no_gguf))
    return 0


if __name__ == "__main__":
    sys.exit(main())
