"""Bivariate transfer-entropy network job.

    python -m jobs.te_network --input data.parquet --out runs/te_net [--config configs/te/ci_tiny.yaml]
    ray job submit --working-dir . -- python -m jobs.te_network --input FILE --out DIR

Input: .parquet / .csv (one numeric column per variable, rows are time) or .npy ([T, N] matrix,
variables named x0..x{N-1}). Writes DIR/edges.csv (source,target,te,p_value,lag: the significant
edges), DIR/pairs.csv (every ordered pair with raw and corrected p-values), DIR/network.graphml,
DIR/network.json (node-link), DIR/network.png and DIR/summary.json; DIR/tasks/ holds finished pair
tasks, which a resubmitted job reuses.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from actors.common.errors import InputError
from actors.te.config import TENetworkSpec
from jobs import cli


def load_spec(path: str | Path | None, overrides: dict | None = None) -> TENetworkSpec:
    """Read a TE network YAML (or defaults), apply dotted overrides like {"network.correction": "fdr"}."""
    return cli.load_spec(TENetworkSpec, path, overrides)


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


def run(spec: TENetworkSpec, input_path: str | Path, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Load the input, compute the network on the Ray pool, write every output; returns the summary."""
    from actors.te.pool import run_network

    out_dir = Path(out_dir)
    data, names = load_input(input_path, spec.columns, spec.max_samples)
    if spec.network.mode == "multivariate":  # greedy and sequential per target, for small N: run it here
        network, stats = run_multivariate(data, names, spec, out_dir)
    else:
        network, stats = run_network(data, names, spec, out_dir, progress=progress)
    summary = {"name": spec.name, "input": str(input_path), "out_dir": str(out_dir), "n_samples": len(data),
               "variables": names, "n_edges": network.graph.number_of_edges(),
               "correction": spec.network.correction, "alpha": spec.network.significance.alpha, **stats}
    write_outputs(network, out_dir, summary)
    return summary


def run_multivariate(data: np.ndarray, names: list[str], spec: TENetworkSpec, out_dir: Path) -> tuple:
    """The multivariate network, one Ray task per target when Ray is up (else in this process).

    Targets are independent and seeded by (seed, target), so the sharded network equals
    multivariate_network(data, names, spec.network). Returns (network, stats) like run_network.
    """
    import time

    import ray

    from actors.te.multivariate import assemble_multivariate, multivariate_config, select_sources
    from actors.te.network import check_data

    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = multivariate_config(spec.network)
    arr, names = check_data(data, names)
    n = len(names)
    if ray.is_initialized():
        task = ray.remote(num_cpus=spec.workers.num_cpus, max_retries=spec.workers.max_task_retries)(select_sources)
        ref = ray.put(arr)
        results = ray.get([task.remote(ref, j, cfg) for j in range(n)])
        engine = "ray tasks"
    else:
        results, engine = [select_sources(arr, j, cfg) for j in range(n)], "local"
    network = assemble_multivariate(results, names, cfg)
    return network, {"mode": "multivariate", "engine": engine, "n_pairs": n * (n - 1), "tasks_computed": n,
                     "tasks_skipped": 0, "wall_seconds": round(time.perf_counter() - t0, 3), "workers": []}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="time series: .parquet, .csv or .npy (rows are time)")
    ap.add_argument("--out", required=True, help="output directory (reused to resume)")
    ap.add_argument("--config", default=None, help="TE network YAML (configs/te/*.yaml); default settings if omitted")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override config fields, e.g. network.correction=fdr network.lags=[1,3]")
    ap.add_argument("--mode", choices=["bivariate", "multivariate"], default=None,
                    help="network.mode: bivariate pairs (default) or greedy multivariate conditioning (small N)")
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or embedded)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from cluster import connect

    try:
        overrides = cli.parse_set(args.set) | ({"network.mode": args.mode} if args.mode else {})
        spec = load_spec(args.config, overrides)
    except (InputError, ValueError) as exc:
        print(f"invalid TE network config {args.config}: {exc}", file=sys.stderr)
        return 2
    connect(args.address)
    try:
        summary = run(spec, args.input, args.out, progress=not args.no_progress)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("out_dir", "n_samples", "variables", "n_edges", "n_pairs",
                                              "tasks_computed", "tasks_skipped", "wall_seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
