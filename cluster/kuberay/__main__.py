"""python -m cluster.kuberay render [--values FILE] [--set key=value ...] --out DIR"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actors.common.errors import InputError
from cluster.kuberay.render import pending_jobs, render, write
from cluster.kuberay.values import DEFAULT_VALUES, load_values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cluster.kuberay", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="write every manifest as YAML into --out")
    r.add_argument("--values", default=str(DEFAULT_VALUES), help="values file (default cluster/kuberay/values.yaml)")
    r.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override values, e.g. image.tag=0.2.0")
    r.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args(argv)
    from jobs.cli import fail, parse_set

    try:
        values = load_values(args.values, parse_set(args.set))
        paths = write(render(values), Path(args.out))
    except InputError as exc:
        return fail(exc)
    for p in paths:
        print(f"wrote {p}")
    for job in pending_jobs(values):
        print(f"pending: RayJob {job} (needs {values.jobs[job].requires})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
