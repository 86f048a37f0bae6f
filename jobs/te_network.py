"""Transfer-entropy network job: bivariate pairs on the TEEstimator pool, or --mode multivariate.

    python -m jobs.te_network --input data.parquet --out runs/te_net [--config configs/te/ci_tiny.yaml]
    ray job submit --working-dir . -- python -m jobs.te_network --input FILE --out DIR

parse -> spec and input (checked before Ray starts) -> actors.te.pool.compute_network -> write.

Input: .parquet / .csv (one numeric column per variable, rows are time) or .npy ([T, N] matrix,
variables named x0..x{N-1}). Writes DIR/edges.csv (source,target,te,p_value,lag: the significant
edges), DIR/pairs.csv (every ordered pair with raw and corrected p-values), DIR/network.graphml,
DIR/network.json (node-link), DIR/network.png and DIR/summary.json; DIR/tasks/ holds finished pair
tasks, which a resubmitted job reuses.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from actors.common.errors import InputError
from actors.te.config import TENetworkSpec
from jobs import cli

SUMMARY_KEYS = ("out_dir", "n_samples", "variables", "n_edges", "n_pairs", "tasks_computed", "tasks_skipped",
                "wall_seconds", "warnings")


def load_input(path: str | Path, columns: list[str] | None = None,
               max_samples: int | None = None) -> tuple[np.ndarray, list[str]]:
    """[T, N] float64 data and variable names from .parquet, .csv or .npy."""
    path = Path(path)
    if not path.exists():
        raise InputError("input", f"{path} does not exist", "an existing .parquet, .csv or .npy file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        arr = arr[:, None] if arr.ndim == 1 else arr
        frame = pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])
    elif suffix == ".csv":
        frame = pd.read_csv(path)
    elif suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    else:
        raise InputError("input", f"unsupported file type {suffix!r}", ".parquet, .csv, .npy")
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise InputError("columns", f"{missing} not in {path.name}", ", ".join(map(str, frame.columns)))
        frame = frame[columns]
    else:
        frame = frame.select_dtypes(include="number")
    if max_samples is not None:
        frame = frame.iloc[:max_samples]
    return frame.to_numpy(dtype=np.float64), [str(c) for c in frame.columns]


def write_outputs(network, out_dir: Path, summary: dict) -> None:
    """edges.csv, pairs.csv, network.graphml / .json / .png and summary.json, each written atomically."""
    import networkx as nx

    from actors.common.storage import atomic_write_bytes, atomic_write_json
    from actors.te.plots import network_png

    atomic_write_bytes(out_dir / "edges.csv", network.edges().to_csv(index=False).encode())
    atomic_write_bytes(out_dir / "pairs.csv", network.table.to_csv(index=False).encode())
    atomic_write_bytes(out_dir / "network.graphml", "\n".join(nx.generate_graphml(network.graph)).encode())
    atomic_write_json(out_dir / "network.json", nx.node_link_data(network.graph, edges="links"))
    network_png(network.graph, out_dir / "network.png", title=summary.get("name", ""))
    atomic_write_json(out_dir / "summary.json", summary)


def warn_significance(spec: TENetworkSpec, n_vars: int, *, echo: bool = True) -> list[str]:
    """The warnings of actors.te.network.network_warnings (a surrogate count whose p-value floor 1/(S+1)
    keeps the requested correction from declaring any, or any sparse, network), printed to stderr."""
    from actors.te.network import network_warnings

    found = network_warnings(spec.network, n_vars)
    for line in found if echo else ():
        print(f"WARNING (te_network): {line}", file=sys.stderr, flush=True)
    return found


def run(spec: TENetworkSpec, input_path: str | Path, out_dir: str | Path, *, progress: bool = True,
        table: tuple[np.ndarray, list[str]] | None = None) -> dict:
    """Load the input (unless `table` holds it already), compute the network on Ray, write every output;
    returns the summary."""
    from actors.te.pool import compute_network

    out_dir = Path(out_dir)
    data, names = table if table is not None else load_input(input_path, spec.columns, spec.max_samples)
    warnings = warn_significance(spec, len(names), echo=table is None)   # main() printed them before Ray
    network, stats = compute_network(data, names, spec, out_dir, progress=progress)
    summary = {"name": spec.name, "input": str(input_path), "out_dir": str(out_dir), "n_samples": len(data),
               "variables": names, "n_edges": network.graph.number_of_edges(),
               "correction": spec.network.correction, "alpha": spec.network.significance.alpha,
               "warnings": warnings, **stats}
    write_outputs(network, out_dir, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="TE network YAML (configs/te/*.yaml); default settings if omitted",
                        config_required=False, set_example="network.correction=fdr network.lags=[1,3]")
    ap.add_argument("--input", required=True, help="time series: .parquet, .csv or .npy (rows are time)")
    ap.add_argument("--mode", choices=["bivariate", "multivariate"], default=None,
                    help="network.mode: bivariate pairs (default) or greedy multivariate conditioning (small N)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    def load() -> tuple[TENetworkSpec, tuple[np.ndarray, list[str]]]:
        """The spec and the checked input, both before Ray starts."""
        from actors.te.network import check_data

        overrides = cli.parse_set(args.set) | ({"network.mode": args.mode} if args.mode else {})
        spec = cli.load_spec(TENetworkSpec, args.config, overrides)
        table = check_data(*load_input(args.input, spec.columns, spec.max_samples))
        warn_significance(spec, len(table[1]))
        return spec, table

    return cli.run_job(load, lambda loaded: run(loaded[0], args.input, args.out, progress=not args.no_progress,
                                                table=loaded[1]),
                       address=args.address, keys=SUMMARY_KEYS)


if __name__ == "__main__":
    sys.exit(main())
