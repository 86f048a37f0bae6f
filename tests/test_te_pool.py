"""actors.te.pool without a cluster: the resume files (OUT/tasks/pairs-<i>.json, the format earlier runs
wrote), the multivariate fan-out in one process, and the default worker resources.

References: PairResults built by actors.te.batched.pair_results from the same arrays (the in-process
path), multivariate_network (the engine) for run_multivariate, common's WorkerConfig for the default.
The Ray paths (sharding, resume, Serve background jobs) are in test_te_job.py, test_te_pruned.py,
test_te_multivariate.py and test_serve_te.py (slow).
"""
from __future__ import annotations

import json
import warnings

import numpy as np

from actors.common.config import WorkerConfig
from actors.te.batched import pair_results, pairs_te_arrays
from actors.te.config import NetworkConfig, TENetworkSpec
from actors.te.multivariate import multivariate_network
from actors.te.network import PairResult, pair_params, pair_te
from actors.te.pool import compute_network, pair_store, run_multivariate

KEYS = {"source", "target", "te", "lag", "p_raw", "surrogates", "te_by_lag", "n_obs"}


def _data(T: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((T, 3))
    d[1:, 2] += 0.9 * d[:-1, 0]   # 0 -> 2 at lag 1
    return d


def _same(a: PairResult, b: PairResult) -> None:
    assert (a.source, a.target, a.lag, a.n_obs) == (b.source, b.target, b.lag, b.n_obs)
    assert a.te == b.te and a.p_raw == b.p_raw and a.te_by_lag == b.te_by_lag
    np.testing.assert_array_equal(a.surrogates, b.surrogates)


def test_pair_store_round_trips_arrays_and_pair_lists(tmp_path):
    """Both answers of a TEEstimator (te_arrays' arrays with their pairs, run_pairs' PairResults) are stored
    as the same JSON list and load back as equal PairResults."""
    cfg = NetworkConfig.model_validate({"params": {"noise": 0.0, "k": 3}, "lags": (1, 2),
                                        "significance": {"n_surrogates": 4}})
    data, pairs = _data(), [(0, 2), (1, 2)]
    arrays = pairs_te_arrays(data, pairs, cfg, backend="torch")
    want = pair_results(pairs, arrays, cfg.lag_values())
    store = pair_store(tmp_path, cfg.lag_values())
    store.save(3, {**arrays, "pairs": np.asarray(pairs, dtype=np.int64)})
    path = tmp_path / "tasks" / "pairs-000003.json"
    assert store.path(3) == path and path.stat().st_mode & 0o777 == 0o644
    doc = json.loads(path.read_text())
    assert [set(d) for d in doc] == [KEYS, KEYS] and doc[0]["te_by_lag"].keys() == {"1", "2"}
    for got, exp in zip(store.load(3), want, strict=True):
        _same(got, exp)
    cpu = [pair_te(data, i, j, cfg, pair_params(cfg, i, j, None)) for i, j in pairs]   # run_pairs' answer
    store.save(4, cpu)
    for got, exp in zip(store.load(4), cpu, strict=True):
        _same(got, exp)
    assert store.load(5) is None
    path.write_text("[{\"source\": 0")   # a torn file is recomputed, not trusted
    assert store.load(3) is None and not path.exists()


def test_run_multivariate_in_process_equals_engine():
    import ray

    assert not ray.is_initialized()
    data = _data(300, 1)
    spec = TENetworkSpec.model_validate({"network": {"mode": "multivariate",
                                                     "significance": {"n_surrogates": 19}}})
    network, stats = compute_network(data, ["a", "b", "c"], spec)   # multivariate: no pool, no Ray needed
    want = multivariate_network(data, ["a", "b", "c"], spec.network)
    assert set(network.graph.edges) == set(want.graph.edges) == {("a", "c")}
    assert network.table.equals(want.table)
    assert stats["engine"] == "local" and stats["tasks_computed"] == 3 and stats["n_pairs"] == 6
    assert run_multivariate(data, None, spec)[0].graph.number_of_nodes() == 3


def test_default_workers_are_commons_auto():
    """TE's default WorkerConfig is common's: one GPU estimator per GPU on a GPU cluster, CPU ones elsewhere;
    dumping the spec (the pool's resume manifest) warns nothing (the old int-0 default did)."""
    spec = TENetworkSpec()
    assert spec.workers == WorkerConfig() and spec.workers.num_gpus == "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert json.loads(spec.model_dump_json())["workers"]["num_gpus"] == "auto"
