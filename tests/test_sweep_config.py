"""Typed sweep configs: one solver class per backend (illegal options cannot be written), frozen specs,
presets found as package data, older spec.json files still resume, and a Ray-free package namespace."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from actors.common.errors import InputError
from actors.sweep.config import (
    SOLVERS,
    AutoSolver,
    ScipySolver,
    SweepSpec,
    TorchSolver,
    TritonSolver,
    make_solver,
)
from configs import preset, presets
from jobs import cli
from jobs.sweep import load_spec

CI_TINY = preset("sweep", "ci_tiny.yaml")
AXES = [{"name": "a", "lo": 0.6, "hi": 1.6, "n": 2}]


def test_backend_picks_the_class_and_a_missing_backend_is_torch():
    assert type(make_solver()) is TorchSolver
    for backend, cls in (("torch", TorchSolver), ("scipy", ScipySolver), ("triton", TritonSolver),
                         ("auto", AutoSolver)):
        solver = make_solver(backend=backend, rtol=1e-6)
        assert type(solver) is cls and solver.backend == backend and solver.rtol == 1e-6
    spec = SweepSpec.model_validate({"model": "brusselator", "axes": AXES, "solver": {"rtol": 1e-6}})
    assert type(spec.solver) is TorchSolver and spec.solver.compile == "auto"


@pytest.mark.parametrize("backend, option, value, owners", [
    ("scipy", "kernel", "dopri5", "triton or auto"),
    ("scipy", "compile", "off", "torch or auto"),
    ("scipy", "device", "cpu", "torch or triton or auto"),
    ("scipy", "dtype", "float32", "torch or triton or auto"),
    ("torch", "method", "LSODA", "scipy"),
    ("torch", "kernel", "tsit5", "triton or auto"),
    ("torch", "poincare", {"state": "x"}, "triton or auto"),
    ("triton", "compile", "on", "torch or auto"),
    ("triton", "renorm_interval", 1.0, "scipy"),
    ("auto", "method", "RK45", "scipy"),
])
def test_an_option_of_another_backend_is_refused_with_its_field(backend, option, value, owners):
    with pytest.raises(InputError) as err:
        cli.load_spec(SweepSpec, CI_TINY, {"solver.backend": backend, f"solver.{option}": value})
    assert err.value.field == f"solver.{option}"
    assert err.value.allowed == f"backend: {owners}"
    assert f"not {backend}" in err.value.message


def test_errors_name_the_solver_field_not_the_union_tag():
    with pytest.raises(InputError) as err:
        cli.load_spec(SweepSpec, CI_TINY, {"solver.rtol": 5})
    assert err.value.field == "solver.rtol" and err.value.allowed == "<= 0.01"
    with pytest.raises(InputError) as err:
        cli.load_spec(SweepSpec, CI_TINY, {"solver.backend": "cuda"})
    assert err.value.field == "solver.backend" and "'auto'" in err.value.allowed
    with pytest.raises(InputError) as err:
        cli.load_spec(SweepSpec, CI_TINY, {"solver.typo": 1})
    assert err.value.field == "solver.typo"


def test_auto_takes_both_option_sets_and_resolves_to_one():
    auto = make_solver(backend="auto", kernel="dopri5", compile="off", dtype="float32", rtol=1e-6)
    torch_ = auto.as_backend("torch")
    triton = auto.as_backend("triton")
    assert type(torch_) is TorchSolver and (torch_.compile, torch_.dtype, torch_.rtol) == ("off", "float32", 1e-6)
    assert type(triton) is TritonSolver and (triton.kernel, triton.dtype, triton.rtol) == ("dopri5", "float32", 1e-6)
    assert "kernel" not in torch_.model_dump() and "compile" not in triton.model_dump()
    with pytest.raises(InputError, match="solver.poincare"):
        make_solver(backend="auto", poincare={"state": "x"}).as_backend("torch")


def test_auto_with_a_section_on_a_cpu_is_an_error_not_a_dropped_feature():
    from actors.sweep.engine import simulate

    with pytest.raises(InputError, match="solver.poincare"):
        simulate("brusselator", [[1.0, 3.0]], [[1.2, 1.3]], AutoSolver(device="cpu", poincare={"state": "x"}))


def test_specs_are_frozen_and_round_trip_through_json():
    spec = load_spec(CI_TINY)
    with pytest.raises(ValidationError):
        spec.chunk_size = 3
    with pytest.raises(ValidationError):
        spec.solver.rtol = 1e-3
    for backend in SOLVERS:
        s = load_spec(CI_TINY, {"solver": {"backend": backend, "rtol": 1e-5}})
        back = SweepSpec.model_validate_json(s.model_dump_json())
        assert back == s and type(back.solver) is type(s.solver) and back.solver.backend == backend


def test_presets_are_package_data_and_keep_their_meaning():
    sweeps = presets("sweep")
    assert {p.name for p in sweeps} >= {"ci_tiny.yaml", "gaslit_demo.yaml", "gaslit_1m_gpu.yaml"}
    for path in sweeps:
        spec = load_spec(path)
        assert type(spec.solver) is AutoSolver, path.name  # `backend: auto` in every sweep preset
    from jobs.bifurcation import load_spec as load_bifurcation

    for path in presets("bifurcation"):
        assert type(load_bifurcation(path).solver) is TorchSolver, path.name
    demo = load_spec(preset("sweep", "gaslit_demo.yaml"))
    assert demo.solver.kernel == "dopri5" and demo.solver.rtol == 1e-6 and demo.solver.compile == "auto"


def test_models_come_from_the_installed_configs_package_from_any_directory(tmp_path):
    """Run from an empty directory: the model registry and the presets are found as package data."""
    code = ("from actors.sweep.models import model_names; from configs import preset; "
            "print(model_names(), preset('fit', 'gaslit_fit.yaml').is_file())")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "'gaslit_af'" in out.stdout and "'lorenz'" in out.stdout and out.stdout.strip().endswith("True")


def test_a_spec_json_from_before_the_per_backend_solvers_still_resumes(tmp_path):
    """spec.json written when the solver block held every backend's options: the same sweep resumes
    (and the file is rewritten in today's form); a different one is refused."""
    from actors.sweep.pool import claim_sweep_dir

    spec = load_spec(CI_TINY)
    old = json.loads(spec.model_dump_json())
    old["solver"].update(method="DOP853", renorm_interval=2.0)   # scipy's options, ignored by auto
    (tmp_path / "spec.json").write_text(json.dumps(old))
    claim_sweep_dir(spec, tmp_path)
    assert json.loads((tmp_path / "spec.json").read_text()) == json.loads(spec.model_dump_json())
    other = load_spec(CI_TINY, {"solver.rtol": 1e-7})
    with pytest.raises(InputError, match="out: .* already holds a different sweep"):
        claim_sweep_dir(other, tmp_path)


def test_the_package_namespace_is_ray_free_and_lazy():
    code = ("import sys, actors.sweep as s; assert 'torch' not in sys.modules and 'sympy' not in sys.modules; "
            "names = [getattr(s, n) for n in s.__all__]; assert 'ray' not in sys.modules, 'ray'; "
            "print(len(names), s.simulate.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(len(__import__("actors.sweep").sweep.__all__)), "actors.sweep.engine"]
