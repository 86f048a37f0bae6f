"""Sweep platform wiring: backend auto, spectra in the sweep output, multi-worker load balancing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.integrate

from actors.common.errors import InputError
from actors.sweep.config import AutoSolver, SweepSpec, TorchSolver
from actors.sweep.engine import resolve_backend, simulate
from configs import preset
from jobs.sweep import load_spec

CI_TINY = preset("sweep", "ci_tiny.yaml")
# short but converged enough for the Brusselator off the Hopf band; dt 0.01 keeps the RK4 error of
# the relaxation cycles (a = 0.6, b = 4) near 0.3% of the trace average (dt 0.02: 8%)
FAST_SPECTRUM = {"t_transient": 40.0, "t_measure": 60.0, "dt": 0.01}


def test_auto_resolves_to_the_generated_kernels_only_on_cuda():
    assert resolve_backend("auto", "cuda") == "triton"
    assert resolve_backend("auto", "cuda:1") == "triton"
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("auto", "cuda", t_eval=np.linspace(0, 1, 3)) == "torch"  # kernels save no series
    assert resolve_backend("scipy", "cuda") == "scipy"


def test_auto_on_cpu_is_the_torch_backend_bit_for_bit():
    params = np.array([[1.0, 1.5], [1.0, 3.0]])
    u0 = np.array([[1.2, 1.3], [1.2, 1.3]])
    kw = dict(rtol=1e-6, atol=1e-9, t_span=(0.0, 60.0), device="cpu")
    auto = simulate("brusselator", params, u0, AutoSolver(**kw))
    torch_ = simulate("brusselator", params, u0, TorchSolver(**kw))
    assert auto.meta["backend"] == "torch"
    np.testing.assert_array_equal(auto.raw.u_final, torch_.raw.u_final)
    assert list(auto.regime) == ["fixed_point", "limit_cycle"]  # Hopf at b = 1 + a^2 = 2


def test_presets_default_to_auto():
    for name in ("gaslit_demo", "gaslit_demo_gpu", "gaslit_small", "gaslit_large", "ci_tiny", "brusselator_hopf"):
        assert load_spec(preset("sweep", f"{name}.yaml")).solver.backend == "auto", name


def test_gpu_demo_preset_is_larger_than_the_cpu_one():
    cpu = load_spec(preset("sweep", "gaslit_demo.yaml"))
    gpu = load_spec(preset("sweep", "gaslit_demo_gpu.yaml"))
    assert [a.n for a in cpu.axes] == [48, 48]
    assert gpu.n_points >= 256 * 256
    assert [(a.name, a.kind, a.lo, a.hi) for a in gpu.axes] == [(a.name, a.kind, a.lo, a.hi) for a in cpu.axes]


@pytest.mark.parametrize("block, needle", [
    ({"sample": 0}, "selects no trajectory"),
    ({"sample": -1}, "sample"),
    ({"sample": 2, "dt": 0.0}, "dt"),
    ({"sample": 2, "bogus": 1}, "bogus"),
])
def test_bad_spectrum_config_names_the_field(block, needle):
    with pytest.raises(InputError, match=needle):  # jobs' load_spec: pydantic's error as the field's InputError
        load_spec(CI_TINY, {"analysis": {"spectrum": block}})


def _brusselator_cycle(a: float, b: float) -> tuple[float, float]:
    """(period, time average of trace J) of the Brusselator cycle: DOP853 at rtol 1e-10, event crossings."""
    def rhs(_t, s):
        x, y, _ = s
        return [a - (b + 1) * x + x * x * y, b * x - x * x * y, 2 * x * y - (b + 1) - x * x]

    def crossing(_t, s):
        return s[0] - a          # upward through the equilibrium's x
    crossing.direction = 1
    sol = scipy.integrate.solve_ivp(rhs, (0, 300), [1.2, 1.3, 0.0], method="DOP853", rtol=1e-10, atol=1e-12,
                                    events=crossing)
    t, z = sol.t_events[0], sol.y_events[0][:, 2]
    t, z = t[t > 150], z[t > 150]
    return float(np.mean(np.diff(t))), float((z[-1] - z[0]) / (t[-1] - t[0]))


def test_spectrum_of_the_tiny_preset_against_closed_forms_and_scipy():
    from actors.sweep.spectra import spectra_table

    spec = load_spec(CI_TINY, {"analysis": {"spectrum": {"sample": 14, **FAST_SPECTRUM}}})
    table = spectra_table(spec)
    assert len(table) == 14 and (table["source"] == "grid").all()
    assert table["point"].is_unique and table["point"].between(0, 35).all()
    # the point's parameters are the grid's
    grid_a = np.repeat(np.linspace(0.6, 1.6, 6), 6)
    np.testing.assert_allclose(table["a"], grid_a[table["point"]])
    margin = table["b"] - (1 + table["a"] ** 2)
    fixed, cycles = table[margin < -0.3], table[margin > 0.3]
    assert len(fixed) >= 2 and len(cycles) >= 2
    for r in fixed.itertuples():
        J = np.array([[r.b - 1, r.a ** 2], [-r.b, -r.a ** 2]])     # Jacobian at (a, b/a)
        re = np.sort(np.linalg.eigvals(J).real)[::-1]
        np.testing.assert_allclose([r.lambda_1, r.lambda_2], re, atol=0.03)
        assert abs(r.lambda_sum - np.trace(J)) < 2e-3
        assert r.regime_spectrum == "fixed_point" and np.isnan(r.period)
    for r in cycles.itertuples():
        period, mean_trace = _brusselator_cycle(r.a, r.b)
        assert abs(r.lambda_1) < 2e-3
        assert abs(r.lambda_sum - mean_trace) < 5e-3 * abs(mean_trace) + 2e-3
        assert r.regime_spectrum == "limit_cycle" and r.section_order == 1
        assert abs(r.period - period) < 1e-3 * period


def test_serve_accepts_auto_and_runs_torch_on_cpu():
    from serve.sweep import run_simulate

    req = {"model": "brusselator", "params": {"a": 1.0, "b": 3.0}, "t_span": [0.0, 60.0],
           "solver": {"rtol": 1e-6, "atol": 1e-9}}
    auto = run_simulate(req, {"backend": "auto"})
    torch_ = run_simulate(req, {"backend": "torch"})
    assert auto["backend"] == "torch"  # what actually ran
    assert auto["trajectories"][0]["final_state"] == torch_["trajectories"][0]["final_state"]
    assert auto["trajectories"][0]["regime"] == "limit_cycle"


@pytest.mark.slow
def test_two_fake_gpu_workers_give_the_single_worker_result(ray_cluster, tmp_path):
    from actors.sweep.pool import run_sweep

    # cheap settings: this test checks identity and balance, not accuracy (test above)
    short = {"analysis": {"spectrum": {"sample": 4, "t_transient": 5.0, "t_measure": 10.0, "dt": 0.05}},
             "solver.t_span": [0.0, 50.0], "chunk_size": 6}
    two = load_spec(CI_TINY, {"workers": {"num_gpus": "auto", "num_cpus": 0.5}, **short})
    one = load_spec(CI_TINY, {"workers": {"num_workers": 1, "num_gpus": 0, "num_cpus": 0.5}, **short})
    s2 = run_sweep(two, tmp_path / "two", progress=False)
    s1 = run_sweep(one, tmp_path / "one", progress=False)
    # two workers, one per fake GPU, both pulled chunks; one worker did all six
    assert len(s2.workers) == 2 and {tuple(w["gpu_ids"]) for w in s2.workers} == {("0",), ("1",)}
    assert sum(s2.chunks_per_worker) == 6 and min(s2.chunks_per_worker) >= 1
    assert s1.chunks_per_worker == [6]
    assert s1.backends == s2.backends == ["torch"]  # auto on CPU devices (the GPUs are fake)
    t1, t2 = (pd.read_parquet(tmp_path / d / "trajectories.parquet") for d in ("one", "two"))
    pd.testing.assert_frame_equal(t1, t2)
    sp1, sp2 = (pd.read_parquet(tmp_path / d / "spectra.parquet") for d in ("one", "two"))
    pd.testing.assert_frame_equal(sp1, sp2)
    assert len(sp1) == 4 and (sp1["regime_sweep"] != "").all()
    # resume: nothing recomputed, spectra kept
    again = run_sweep(one, tmp_path / "one", progress=False)
    assert again.chunks_computed == 0 and again.spectra == s1.spectra


@pytest.mark.slow
def test_demo_picks_the_gpu_preset_when_the_cluster_has_gpus(ray_cluster):
    from jobs.demo import DEMO_SWEEP, DEMO_SWEEP_GPU, demo_config

    assert ray_cluster.cluster_resources()["GPU"] == 2  # fake GPUs of the fixture
    assert demo_config("auto") == DEMO_SWEEP_GPU
    assert demo_config("cpu") == DEMO_SWEEP


def test_spec_json_written_before_the_analysis_block_still_resumes(tmp_path):
    import json

    from actors.sweep.pool import claim_sweep_dir

    spec = load_spec(CI_TINY)
    old = json.loads(spec.model_dump_json())
    del old["analysis"]
    (tmp_path / "spec.json").write_text(json.dumps(old))
    claim_sweep_dir(spec, tmp_path)  # no error: same sweep
    with pytest.raises(Exception, match="different sweep"):
        claim_sweep_dir(SweepSpec.model_validate({**old, "chunk_size": 5}), tmp_path)


@pytest.mark.gpu
def test_auto_on_cuda_runs_the_generated_kernels_and_agrees_with_torch():
    from actors.sweep.engine import grid_points

    spec = load_spec(CI_TINY)
    params, u0 = grid_points(spec)
    auto = simulate(spec.model, params, u0, spec.solver.model_copy(update={"device": "cuda"}))
    ref = simulate(spec.model, params, u0, spec.solver.as_backend("torch").model_copy(update={"device": "cpu"}))
    assert auto.meta["backend"] == "triton"
    margin = params[:, 1] - (1 + params[:, 0] ** 2)
    off_hopf = np.abs(margin) > 0.3
    assert (auto.regime[off_hopf] == ref.regime[off_hopf]).all()
    fp = off_hopf & (margin < 0)
    equilibrium = np.stack([params[fp, 0], params[fp, 1] / params[fp, 0]], axis=1)   # (a, b/a)
    np.testing.assert_allclose(auto.raw.u_final[fp], equilibrium, atol=1e-4)


@pytest.mark.gpu
def test_spectra_on_cuda_match_the_cpu():
    from actors.sweep.spectra import spectra_table

    spec = load_spec(CI_TINY, {"analysis": {"spectrum": {"sample": 8, **FAST_SPECTRUM}}})
    cpu, gpu = spectra_table(spec, device="cpu"), spectra_table(spec, device="cuda")
    np.testing.assert_allclose(gpu[["lambda_1", "lambda_2"]], cpu[["lambda_1", "lambda_2"]], atol=1e-6)
    assert (gpu["regime_spectrum"] == cpu["regime_spectrum"]).all()
