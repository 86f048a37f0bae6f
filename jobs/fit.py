"""Parameter-recovery job: plant parameters, observe a noisy trajectory, fit them back with Ray Tune.

    python -m jobs.fit [--config configs/fit/gaslit_fit.yaml] [--out DIR] [--num-samples N]
    ray job submit --working-dir . -- python -m jobs.fit --out DIR

Writes DIR/fit.json (FitResult, written atomically), DIR/fit.png (observed vs fitted trajectory)
and the Tune experiment under DIR/tune/. Prints true vs fitted vs relative error; the exit code is
0 only when every fitted parameter is within the config's tolerance (5 %) of its planted value.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from configs import preset
from jobs import cli

DEFAULT_CONFIG = preset("fit", "gaslit_fit.yaml")
EXIT_NOT_RECOVERED = 1


def main(argv: list[str] | None = None) -> int:
    # its own parser: every option has a default here (cli.job_parser requires --config and --out)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="fit YAML (configs/fit/*.yaml)")
    ap.add_argument("--out", default="runs/fit", help="output directory (default runs/fit)")
    ap.add_argument("--num-samples", type=int, default=None, help="Tune trials (default: the config's)")
    ap.add_argument("--seed", type=int, default=None, help="noise and sampler seed (default: the config's)")
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or an embedded cluster)")
    args = ap.parse_args(argv)

    from tune.fit_ode import FitSpec, fit, table, write_outputs

    overrides = {k: v for k, v in (("num_samples", args.num_samples), ("seed", args.seed)) if v is not None}
    out_dir = Path(args.out).resolve()
    outcome = {}

    def run(spec: FitSpec) -> None:
        result = fit(spec, storage_path=out_dir / "tune")
        json_path, png_path = write_outputs(spec, result, out_dir)
        print(table(result))
        print(f"wrote {json_path} and {png_path}")
        outcome["result"] = result

    status = cli.run_job(lambda: cli.load_spec(FitSpec, args.config, overrides), run, address=args.address)
    result = outcome.get("result")
    if status == 0 and result is not None and not result.ok:
        print(f"FAILED: max relative error {100 * result.max_rel_error:.2f}% >= {100 * result.tolerance:g}%",
              file=sys.stderr)
        return EXIT_NOT_RECOVERED
    return status


if __name__ == "__main__":
    sys.exit(main())
