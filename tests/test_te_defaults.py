"""jobs.te_network defaults: GPU estimators when there are GPUs, batch sizes from the problem, and a warning
when the surrogate count cannot reach significance under the requested correction.

The warnings are checked against what they claim: Benjamini-Hochberg (actors.te.significance.fdr_bh,
itself tested against the textbook procedure) run on p-values at the floor 1/(S+1) rejects nothing with
the warned S and everything with the S the warning recommends. No Ray here (fast).
"""
from __future__ import annotations

import numpy as np
import pytest

from actors.common.config import validated
from actors.common.errors import InputError
from actors.te.config import NetworkConfig, TENetworkSpec
from actors.te.network import network_warnings, resolve_pairs_per_task
from actors.te.significance import fdr_bh, significance_warnings, surrogates_needed
from jobs.te_network import run, warn_significance


def _bh_rejects(n_surrogates: int, n_tests: int, n_edges: int, alpha: float = 0.05) -> int:
    """BH rejections when n_edges tests sit at the p-value floor and the rest are null (uniform)."""
    rng = np.random.default_rng(0)
    floor = 1.0 / (n_surrogates + 1)
    p = np.r_[np.full(n_edges, floor), np.maximum(floor, rng.uniform(size=n_tests - n_edges))]
    return int(fdr_bh(p, alpha)[0].sum())


def test_fdr_warning_at_n100_is_true_and_its_remedy_works():
    n, s = 100, 100
    warns = network_warnings(NetworkConfig(correction="fdr", significance={"n_surrogates": s}), n)
    assert len(warns) == 1 and "Benjamini-Hochberg" in warns[0] and "1/(S+1)" in warns[0]
    assert _bh_rejects(s, n * (n - 1), n_edges=181) == 0      # the 181 true edges: empty network
    need = surrogates_needed("fdr", 0.05, n * (n - 1), n)
    assert f"n_surrogates >= {need}" in warns[0]
    assert _bh_rejects(need, n * (n - 1), n_edges=n) >= n       # one edge per variable: all found
    assert network_warnings(NetworkConfig(correction="fdr", significance={"n_surrogates": need}), n) == []


@pytest.mark.parametrize("correction, s, alpha, warned", [
    ("max", 10, 0.05, True), ("max", 19, 0.05, False), ("max", 98, 0.01, True), ("max", 100, 0.01, False),
    ("none", 10, 0.05, True), ("fdr", 10, 0.05, True), ("fdr", 20, 0.5, False),
])
def test_floor_above_alpha_warns(correction, s, alpha, warned):
    got = significance_warnings(correction, alpha, s, n_tests=6, n_vars=3)
    assert bool(got) == warned, got
    if warned:
        assert f"{1 / (s + 1):.3g}" in got[0]


def test_multivariate_warning_and_job_summary(capsys, tmp_path):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((120, 3))
    spec = validated(TENetworkSpec, {"network": {"mode": "multivariate", "significance": {"n_surrogates": 5}}})
    assert warn_significance(spec, 3) and "WARNING (te_network)" in capsys.readouterr().err
    summary = run(spec, "inline", tmp_path / "net", progress=False, table=(data, ["a", "b", "c"]))   # no Ray: in process
    assert summary["warnings"] == network_warnings(spec.network, 3) != [] and summary["n_edges"] == 0


def test_auto_pairs_per_task():
    cfg = NetworkConfig(significance={"n_surrogates": 100})
    # a GPU: whole targets per task (99 pairs each), at least 4 tasks, at most one full launch per task
    assert resolve_pairs_per_task("auto", cfg, 100, 10_000, device=True) == 25 * 99
    assert resolve_pairs_per_task("auto", cfg, 1000, 1000, device=True) == 41 * 999   # 4M // (999 * 101)
    # the CPU: about 1e6 rows x estimates per task, never fewer than 4 tasks
    assert resolve_pairs_per_task("auto", cfg, 100, 1000, device=False) == 9
    assert resolve_pairs_per_task("auto", NetworkConfig(significance={"n_surrogates": 19}), 3, 300,
                                  device=False) == 2
    assert resolve_pairs_per_task(7, cfg, 100, 1000, device=True) == 7
    assert TENetworkSpec().pairs_per_task == "auto" and TENetworkSpec().workers.num_gpus == "auto"
    with pytest.raises(InputError) as info:
        validated(TENetworkSpec, {"pairs_per_task": 0})
    assert info.value.field == "pairs_per_task"


def test_device_pool_without_ray():
    from actors.te.pool import device_pool

    assert device_pool(TENetworkSpec()) is False                       # num_gpus auto, no Ray (no GPUs) here
    assert device_pool(validated(TENetworkSpec, {"workers": {"num_gpus": 1}})) is True
    assert device_pool(validated(TENetworkSpec, {"network": {"params": {"backend": "torch"}},
                                                 "workers": {"num_gpus": 0}})) is True
    assert device_pool(validated(TENetworkSpec, {"network": {"params": {"backend": "cpu"}},
                                                 "workers": {"num_gpus": 1}})) is False
