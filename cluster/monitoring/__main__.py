"""python -m cluster.monitoring write: regenerate rules.yml and dashboards/*.json."""
from __future__ import annotations

import sys

from cluster.monitoring.dashboards import write


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["write"]:
        print(__doc__, file=sys.stderr)
        return 2
    for p in write():
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
