"""Pseudo-arclength continuation: folds, branch points and Hopf points against closed forms.

Brusselator: equilibrium (a, b/a), Hopf at b = 1 + a^2 with frequency a. Lorenz: the origin's
pitchfork at rho = 1 and the Hopf of C+- at rho = sigma (sigma + beta + 3) / (sigma - beta - 1).
x' = mu + x - x^3: folds at mu = +-2 / (3 sqrt 3) with x = -+1/sqrt 3 (an S-curve walked round both).
"""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from actors.common.errors import InputError
from actors.sweep.continuation import (
    ContinuationError,
    ContinuationSpec,
    continue_branch,
    continue_equilibria,
)
from actors.sweep.models import get_model, register_model
from configs import preset

CUBIC = register_model({"name": "cubic_fold_test", "states": ["x"], "params": {"mu": 0.0},
                        "initial_state": {"x": -1.3}, "equations": {"x": "mu + x - x**3"}})


def _special(branch, kind):
    return [s for s in branch.special if s.kind == kind]


@pytest.mark.parametrize("a", [1.0, 1.5])
def test_brusselator_hopf_at_one_plus_a_squared(a):
    spec = ContinuationSpec(model="brusselator", parameter="b", params={"a": a}, bounds=(0.5, 2 + a * a),
                            branches=[{"start": 1.0, "initial_state": {"x": 1.0, "y": 1.0}}])
    (branch,) = continue_equilibria(spec)
    np.testing.assert_allclose(branch.states[:, 0], a, atol=1e-10)  # x* = a
    np.testing.assert_allclose(branch.states[:, 1], branch.param / a, atol=1e-10)  # y* = b/a
    (hopf,) = _special(branch, "hopf")
    assert abs(hopf.param - (1 + a * a)) < 1e-6
    assert abs(hopf.frequency - a) < 1e-6  # eigenvalues ±i a at the Hopf point (det J = a^2)
    assert not _special(branch, "fold") and not _special(branch, "branch_point")
    # stable before the Hopf, unstable after
    assert branch.stable[branch.param < hopf.param - 1e-9].all()
    assert not branch.stable[branch.param > hopf.param + 1e-9].any()
    assert branch.stop_reason == "bounds"


def test_lorenz_pitchfork_on_the_trivial_branch_only():
    """Origin, rho in [0, 30]: one branch point at rho = 1; the neutral saddle (real pair mu, -mu at
    rho ~ 4.64) zeroes the Hopf test function too and must be rejected."""
    spec = ContinuationSpec(model="lorenz", parameter="rho", bounds=(0.0, 30.0),
                            branches=[{"start": 0.0, "initial_state": {"x": 0.0, "y": 0.0, "z": 0.0}}])
    (branch,) = continue_equilibria(spec)
    assert [s.kind for s in branch.special] == ["branch_point"]
    assert abs(branch.special[0].param - 1.0) < 1e-6
    assert np.abs(branch.states).max() == 0.0
    assert branch.stable[branch.param < 1 - 1e-9].all() and not branch.stable[branch.param > 1 + 1e-9].any()


def test_lorenz_hopf_of_nontrivial_equilibria_and_their_pitchfork():
    sigma, beta = 10.0, 8.0 / 3.0
    rho_h = sigma * (sigma + beta + 3) / (sigma - beta - 1)  # 24.7368...
    spec = ContinuationSpec(model="lorenz", parameter="rho", bounds=(0.5, 30.0), branches=[
        {"start": 10.0, "initial_state": {"x": 5.0, "y": 5.0, "z": 9.0}},
        {"start": 10.0, "direction": -1, "initial_state": {"x": 5.0, "y": 5.0, "z": 9.0}}])
    up, down = continue_equilibria(spec)
    (hopf,) = _special(up, "hopf")
    assert abs(hopf.param - rho_h) < 1e-6
    # C+ = (sqrt(beta (rho - 1)), same, rho - 1) along the branch
    np.testing.assert_allclose(up.states[:, 0], np.sqrt(beta * (up.param - 1)), rtol=1e-9)
    np.testing.assert_allclose(up.states[:, 2], up.param - 1, rtol=1e-9)
    # going down, C+ meets the origin at rho = 1 (the pitchfork), turns, and follows C- up to its Hopf
    kinds = [(s.kind, round(s.param, 6)) for s in down.special]
    assert kinds == [("branch_point", 1.0), ("hopf", round(rho_h, 6))]
    assert abs(down.special[0].param - 1.0) < 1e-6 and abs(down.special[1].param - rho_h) < 1e-6
    assert down.states[-1, 0] < 0  # ended on C-


def test_cubic_s_curve_two_folds_and_stability():
    spec = ContinuationSpec(model="cubic_fold_test", parameter="mu", bounds=(-1.0, 1.0),
                            branches=[{"start": -1.0}])
    (branch,) = continue_equilibria(spec)
    folds = _special(branch, "fold")
    mu_f = 2 / (3 * np.sqrt(3))
    assert [round(f.param, 9) for f in folds] == [round(mu_f, 9), round(-mu_f, 9)]
    assert abs(folds[0].param - mu_f) < 1e-9 and abs(folds[1].param + mu_f) < 1e-9
    np.testing.assert_allclose([f.state[0] for f in folds], [-1 / np.sqrt(3), 1 / np.sqrt(3)], atol=1e-6)
    np.testing.assert_allclose(branch.param, branch.states[:, 0] ** 3 - branch.states[:, 0], atol=1e-10)
    # stable exactly where F_x = 1 - 3 x^2 < 0
    x = branch.states[:, 0]
    assert (branch.stable == (1 - 3 * x**2 < 0)).all()
    assert branch.states[-1, 0] > 1  # walked round both folds onto the upper branch


def test_bad_inputs_name_the_field():
    with pytest.raises(InputError, match="parameter"):
        continue_equilibria(ContinuationSpec(model="lorenz", parameter="nope", bounds=(0, 1),
                                             branches=[{"start": 0.5}]))
    with pytest.raises(InputError, match="branches.start"):
        continue_equilibria(ContinuationSpec(model="lorenz", parameter="rho", bounds=(0, 1),
                                             branches=[{"start": 5.0}]))
    with pytest.raises(ValidationError, match="bounds"):
        ContinuationSpec(model="lorenz", parameter="rho", bounds=(1, 0), branches=[{}])
    with pytest.raises(InputError, match="model"):
        continue_equilibria(ContinuationSpec(model="nope", parameter="rho", bounds=(0, 1), branches=[{}]))
    # x' = x^2 + 1 has no real equilibrium: Newton from the guess cannot converge
    nothing = register_model({"name": "no_equilibrium_test", "states": ["x"], "params": {"c": 1.0},
                              "initial_state": {"x": 0.3}, "equations": {"x": "x**2 + c"}})
    spec = ContinuationSpec(model=nothing.name, parameter="c", bounds=(0.5, 2), branches=[{}])
    with pytest.raises(ContinuationError, match="initial_state"):
        continue_branch(spec, spec.branches[0])
    assert get_model(nothing.name).name == nothing.name


def test_local_maxima_parabolic_refinement_against_closed_form():
    from actors.sweep.bifurcation import local_maxima

    ts = np.linspace(0, 20, 401)
    t_max, y_max = local_maxima(ts, 2.0 + 3.0 * np.sin(1.3 * ts))
    expect = (np.pi / 2 + 2 * np.pi * np.arange(5)) / 1.3
    np.testing.assert_allclose(t_max, expect[expect < 20], atol=2e-4)
    np.testing.assert_allclose(y_max, 5.0, atol=2e-4)


def test_bifurcation_job_ci_preset_onset_at_the_hopf(tmp_path):
    """The CI preset: oscillation starts within one grid spacing of b = 1 + a^2, the overlaid
    continuation puts the Hopf there to 1e-6, cycle maxima grow from the equilibrium value a."""
    import json

    import pandas as pd

    from jobs.bifurcation import load_spec
    from jobs.bifurcation import main as bifurcation_main

    cfg = str(preset("bifurcation", "brusselator_ci.yaml"))
    out = tmp_path / "bif"
    assert bifurcation_main(["--config", cfg, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    spec = load_spec(cfg)
    a = spec.params["a"]
    spacing = summary["grid_spacing"]
    assert summary["first_oscillating"] is not None
    assert 0 <= summary["first_oscillating"] - (1 + a * a) <= spacing  # first grid value past the Hopf
    (hopf,) = summary["special_points"]
    assert hopf["kind"] == "hopf" and abs(hopf["param"] - (1 + a * a)) < 1e-6
    dots = pd.read_parquet(out / "bifurcation.parquet")
    assert list(dots.columns) == ["b", "x", "kind", "regime"]
    eq = dots[dots["kind"] == "equilibrium"]
    assert (eq["b"] < 1 + a * a).all()
    np.testing.assert_allclose(eq["x"], a, atol=1e-3)  # settled on (a, b/a)
    peaks = dots[dots["kind"] == "max"].groupby("b")["x"].max()
    assert (peaks.index > 1 + a * a).all() and (peaks > a).all() and peaks.is_monotonic_increasing
    assert (out / "bifurcation.png").stat().st_size > 10_000
    # the spectrum block: λ1 = λ2 = (b - 1 - a^2)/2 at the focus below the Hopf (complex pair), a cycle
    # (λ1 ~ 0, λ2 < 0) with a period that grows from 2π/a above it
    rows = pd.read_parquet(out / "trajectories.parquet")
    below, above = rows[rows["b"] < 1 + a * a], rows[rows["b"] > 1 + a * a + 0.2]
    assert (below["spectrum_regime"] == "fixed_point").all() and (below["regime"] == "fixed_point").all()
    np.testing.assert_allclose(below["lambda_1"], (below["b"] - 1 - a * a) / 2, atol=0.02)
    np.testing.assert_allclose(below["lambda_1"] + below["lambda_2"], below["b"] - 1 - a * a, atol=1e-3)
    assert (above["spectrum_regime"] == "limit_cycle").all() and (above["lambda_1"].abs() < 0.01).all()
    assert (above["lambda_2"] < -0.1).all()
    assert above["period"].is_monotonic_increasing and (above["period"] > 2 * np.pi / a).all()
    assert bifurcation_main(["--config", cfg, "--out", str(out), "--set", "parameter=nope"]) == 2


def test_continuation_job_writes_branches_and_points(tmp_path):
    import json

    import pandas as pd

    from jobs.continuation import main as continuation_main

    out = tmp_path / "cont"
    assert continuation_main(["--config", str(preset("continuation", "lorenz_rho.yaml")), "--out", str(out),
                              "--set", "bounds=[0,30]"]) == 0
    points = json.loads((out / "special_points.json").read_text())
    kinds = sorted((p["kind"], round(p["param"], 6)) for p in points)
    assert kinds == [("branch_point", 1.0), ("branch_point", 1.0), ("hopf", 24.736842), ("hopf", 24.736842)]
    table = pd.read_parquet(out / "branches.parquet")
    assert {"branch", "label", "rho", "x", "y", "z", "max_real_eig", "stable"} <= set(table.columns)
    assert set(table["branch"]) == {0, 1, 2}
    assert (table["stable"] == (table["max_real_eig"] < 0)).all()
    assert (out / "continuation.png").stat().st_size > 10_000
    assert continuation_main(["--config", str(preset("continuation", "lorenz_rho.yaml")), "--out", str(out),
                              "--set", "plot_state=w"]) == 2


def test_gaslit_hopf_matches_an_independent_finite_difference_eigen_scan():
    """GASLIT-AF healthy branch: the located Hopf in gamma (0.26495) is where the max real part of the
    eigenvalues of a central-difference Jacobian at scipy-fsolve equilibria changes sign."""
    import scipy.optimize

    from jobs.continuation import load_spec

    spec = load_spec(preset("continuation", "gaslit_gamma.yaml"))
    healthy = continue_branch(spec, spec.branches[0])
    (hopf,) = _special(healthy, "hopf")
    model = get_model("gaslit_af")

    def max_re(gamma: float) -> float:
        p = model.param_vector({"gamma": gamma})
        u = scipy.optimize.fsolve(lambda v: model.rhs_numpy(v, p), hopf.state, xtol=1e-13)
        eps = 1e-6
        J = np.stack([(model.rhs_numpy(u + eps * e, p) - model.rhs_numpy(u - eps * e, p)) / (2 * eps)
                      for e in np.eye(len(u))], axis=1)
        return np.linalg.eigvals(J).real.max()

    assert max_re(hopf.param - 1e-4) < 0 < max_re(hopf.param + 1e-4)
    assert healthy.stable[healthy.param < 0.1].all()  # the documented healthy point (gamma = 0.1)


@pytest.mark.slow
def test_bifurcation_chunks_as_ray_tasks_equal_the_in_process_run(ray_cluster, tmp_path):
    """--ray: chunks pulled by SweepWorkers (on the fake-GPU test cluster one per GPU); same numbers."""
    import pandas as pd

    from actors.sweep.bifurcation import diagram_points
    from jobs.bifurcation import load_spec
    from jobs.bifurcation import main as bifurcation_main

    cfg = str(preset("bifurcation", "brusselator_ci.yaml"))
    sets = ["n=4", "chunk_size=2", "spectrum=null", "continuation=[]", "solver.t_span=[0,120]"]
    out = tmp_path / "bif_ray"
    assert bifurcation_main(["--config", cfg, "--out", str(out), "--ray", "--set", *sets]) == 0
    spec = load_spec(cfg, {"n": 4, "chunk_size": 2, "spectrum": None, "continuation": [],
                           "solver.t_span": [0, 120]})
    dots, rows = diagram_points(spec)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "bifurcation.parquet"), dots)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "trajectories.parquet"), rows)
    assert len(rows) == 4 and rows["regime"].iloc[0] == "fixed_point"  # b = 1.56 < 2 < 2.06, 2.56, 3.06
