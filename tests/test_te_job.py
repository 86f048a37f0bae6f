"""TE network job and pool on a small in-process Ray cluster: outputs, equality with the engine,
resume, GPU pinning of estimators, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from actors.te.config import NetworkConfig, TENetworkSpec
from actors.te.network import te_network
from jobs import cli
from jobs.te_network import main

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "te" / "ci_tiny.yaml"


def _planted(T: int = 300, seed: int = 0) -> pd.DataFrame:
    """a -> c and b -> d at lag 1 (a, b iid; c, d AR(1)); every other pair has zero TE."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((T, 4))
    d = np.zeros((T, 4))
    for t in range(T - 1):
        d[t + 1, :2] = e[t + 1, :2]
        d[t + 1, 2] = 0.5 * d[t, 2] + 0.9 * d[t, 0] + e[t + 1, 2]
        d[t + 1, 3] = 0.5 * d[t, 3] + 0.9 * d[t, 1] + e[t + 1, 3]
    return pd.DataFrame(d, columns=["a", "b", "c", "d"])


def test_job_writes_outputs_equal_to_engine_and_resumes(ray_cluster, tmp_path, capsys):
    frame = _planted()
    src = tmp_path / "series.parquet"
    frame.to_parquet(src)
    out = tmp_path / "net"
    assert main(["--input", str(src), "--out", str(out), "--config", str(CONFIG), "--no-progress"]) == 0
    for name in ("edges.csv", "pairs.csv", "network.graphml", "network.json", "network.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    edges = pd.read_csv(out / "edges.csv")
    assert list(edges.columns) == ["source", "target", "te", "p_value", "lag"]
    assert set(zip(edges.source, edges.target)) == {("a", "c"), ("b", "d")}
    # sharded across two actors == computed here, pair by pair (per-pair seeds)
    spec = cli.load_spec(TENetworkSpec, CONFIG)
    local = te_network(frame.to_numpy(), list(frame.columns), spec.network)
    pairs = pd.read_csv(out / "pairs.csv")
    np.testing.assert_array_equal(pairs["te"].to_numpy(), local.table["te"].to_numpy())
    np.testing.assert_array_equal(pairs["p_value"].to_numpy(), local.table["p_value"].to_numpy())
    graph = nx.read_graphml(out / "network.graphml")
    assert set(graph.edges) == set(local.graph.edges)
    assert graph.edges["a", "c"]["lag"] == 1
    node_link = json.loads((out / "network.json").read_text())
    assert len(node_link["links"]) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks_computed"] == 4 and summary["tasks_skipped"] == 0 and len(summary["workers"]) == 2
    # resubmission: every task is on disk, nothing is recomputed, same answer
    assert main(["--input", str(src), "--out", str(out), "--config", str(CONFIG), "--no-progress"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["tasks_computed"] == 0 and again["tasks_skipped"] == 4
    pd.testing.assert_frame_equal(pd.read_csv(out / "pairs.csv"), pairs)
    # a different spec into the same directory is refused
    assert main(["--input", str(src), "--out", str(out), "--config", str(CONFIG), "--no-progress",
                 "--set", "network.correction=fdr"]) == 2
    assert "already holds a different TE network" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_job_reads_npy_and_csv(ray_cluster, tmp_path, suffix):
    frame = _planted(T=200, seed=1)[["a", "c"]]
    src = tmp_path / f"series{suffix}"
    if suffix == ".npy":
        np.save(src, frame.to_numpy())
    else:
        frame.to_csv(src, index=False)
    out = tmp_path / "net"
    assert main(["--input", str(src), "--out", str(out), "--config", str(CONFIG), "--no-progress"]) == 0
    pairs = pd.read_csv(out / "pairs.csv")
    names = ["x0", "x1"] if suffix == ".npy" else ["a", "c"]
    assert sorted(pairs["source"]) == sorted(names)
    assert pd.read_csv(out / "edges.csv")[["source", "target"]].values.tolist() == [names]


def test_job_rejects_bad_input(ray_cluster, tmp_path, capsys):
    frame = _planted(T=100)
    frame.loc[5, "b"] = np.nan
    src = tmp_path / "bad.csv"
    frame.to_csv(src, index=False)
    assert main(["--input", str(src), "--out", str(tmp_path / "o"), "--config", str(CONFIG), "--no-progress"]) == 2
    assert "NaN" in capsys.readouterr().err
    assert main(["--input", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert main(["--input", str(src), "--out", str(tmp_path / "o3"), "--set", "network.params.k_hist=0"]) == 2


def test_estimators_pin_fake_gpus_when_asked(ray_cluster):
    from actors.te.config import WorkerConfig
    from actors.te.pool import estimators

    pool = estimators(WorkerConfig(num_gpus="auto", num_cpus=0.5))  # 2 fake GPUs -> 2 GPU estimators
    infos = ray_cluster.get([w.info.remote() for w in pool])
    assert sorted(tuple(i["gpu_ids"]) for i in infos) == [("0",), ("1",)]
    x = np.random.default_rng(0).standard_normal(300)
    y = np.r_[0.0, x[:-1]] + 0.5 * np.random.default_rng(1).standard_normal(300)
    res = ray_cluster.get(pool[0].transfer_entropy.remote(x, y, {"k": 4}))
    assert res["te"] > 0.5 and res["n_obs"] == 299
    for w in pool:
        ray_cluster.kill(w)


def test_network_config_from_yaml_round_trips():
    spec = cli.load_spec(TENetworkSpec, CONFIG, {"network.lags": [1, 3]})
    assert isinstance(spec.network, NetworkConfig) and spec.network.lag_values() == [1, 2, 3]
