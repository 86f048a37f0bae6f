"""Tune the router's energy weights, predictor and domains on replayed outcomes; judge on a held-out split.

    python -m jobs.tune_router --data ../shared/data/routellm/gsm8k.parquet \\
        --data ../shared/data/routellm/mmlu.parquet --out runs/tune_router [--config configs/router/search.yaml]
    ray job submit --working-dir . -- python -m jobs.tune_router --data FILE --out DIR

parse -> spec and data (checked before Ray starts) -> embeddings (cached) -> outer split -> Tune (TPE +
ASHA over inner folds) -> best and base fitted on the inner routes, scored on the test split -> write.
Writes DIR/search.json, DIR/search.md (tuned vs base vs random on the test split, CIs, paired gap),
DIR/trials.parquet, DIR/search.png and the Tune experiment under DIR/tune/. Protocol: tune/router.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

from jobs import cli

SUMMARY_KEYS = ("name", "n_trials", "n_full", "n_routes", "best", "base_inner_apgr", "wall_seconds")


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="router search YAML (configs/router/search*.yaml); defaults if omitted",
                        config_required=False, set_example="num_samples=8 base.max_rows=300")
    ap.add_argument("--data", action="append", required=True,
                    help="Parquet file in the shared routing schema (repeatable)")
    args = ap.parse_args(argv)

    from actors.common.storage import claim_out_dir
    from actors.router.data import load_routes
    from actors.router.evaluate import prepare_routes
    from tune.router import RouterSearchSpec, search

    def load():
        spec = cli.load_spec(RouterSearchSpec, args.config, cli.parse_set(args.set))
        data = load_routes(args.data, max_rows=spec.base.max_rows, seed=spec.base.eval.seed)
        return spec, data

    def run(loaded) -> dict:
        spec, data = loaded
        out = Path(args.out)
        claim_out_dir(out, {"spec": spec.model_dump(mode="json"), "data": [Path(p).name for p in data.files]},
                      "router search")
        result = search(prepare_routes(data, spec.base), spec, out)
        print((out / "search.md").read_text())
        return result

    return cli.run_job(load, run, address=args.address, keys=SUMMARY_KEYS)


if __name__ == "__main__":
    sys.exit(main())
