"""The layering rules, read from the source (kernels <- engines <- actors/pools <- jobs / serve / tune).

- Engines import no Ray: under actors/ only the Ray wrappers (actor.py, pool.py, raydata.py and
  actors/common/{worker,scheduler}.py) may import `ray`, and no engine imports a Ray wrapper; kernels/
  imports no Ray at all. Checked twice: statically (every import statement, lazy ones included) and by
  importing every engine module in a fresh interpreter and finding no `ray` in sys.modules.
- Nothing under actors/ or kernels/ imports jobs, serve or tune; kernels/ imports no actors either.
- Subsystems share code only through actors/common; one subsystem may use another's public engine API
  (`from actors.te import mutual_information`), never its modules (`actors.te.ksg`).
- serve/ and tune/ import no jobs; job entrypoints (jobs/*.py) import no serve — benchmarks
  (jobs/bench/) may, since measuring an app's HTTP overhead or load is their job.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RAY_WRAPPERS = {"actor", "pool", "raydata"}
COMMON_RAY = {"actors.common.worker", "actors.common.scheduler"}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py") if "protos" not in p.parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import statement in the file, nested ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            base = ROOT.joinpath(*node.module.split("."))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names   # submodules imported by name
                    if (base / f"{a.name}.py").exists() or (base / a.name / "__init__.py").exists()]
    return out


def _is_ray_wrapper(module: str) -> bool:
    return module in COMMON_RAY or (module.startswith("actors.") and module.rsplit(".", 1)[-1] in RAY_WRAPPERS)


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _engine_modules() -> list[str]:
    return [m for m in map(_module, _files("actors", "kernels")) if not _is_ray_wrapper(m)]


def _violations() -> list[str]:
    bad = []
    for path in _files("actors", "kernels", "jobs", "serve", "tune"):
        mod = _module(path)
        top = _top(mod)
        sub = mod.split(".")[1] if top == "actors" and mod.count(".") >= 1 else None
        for line, name in _imports(path):
            where = f"{path.relative_to(ROOT)}:{line} imports {name}"
            first = _top(name)
            if top in ("actors", "kernels") and first in ("jobs", "serve", "tune"):
                bad.append(f"{where} (actors/kernels must not import jobs, serve or tune)")
            if top == "kernels" and first in ("actors", "cluster", "ray"):
                bad.append(f"{where} (kernels import no actors and no Ray)")
            if top == "actors" and not _is_ray_wrapper(mod):
                if first == "ray":
                    bad.append(f"{where} (an engine module imports Ray)")
                if _is_ray_wrapper(name):
                    bad.append(f"{where} (an engine module imports a Ray wrapper)")
            if sub and sub != "common" and name.startswith("actors.") and name.count(".") >= 2:
                other = name.split(".")[1]
                if other not in (sub, "common") and name.split(".")[2] not in _public_names(other):
                    bad.append(f"{where} (subsystems share code only through actors.common or a public API)")
            if top in ("serve", "tune") and first == "jobs":
                bad.append(f"{where} (serve/tune must not import jobs)")
            if top == "jobs" and not mod.startswith("jobs.bench") and first == "serve":
                bad.append(f"{where} (job entrypoints must not import serve)")
    return bad


def _public_names(subsystem: str) -> set[str]:
    """The names a subsystem's __init__ exports (`from actors.te import X` is the public API)."""
    import importlib

    if not (ROOT / "actors" / subsystem / "__init__.py").exists():
        return set()
    return set(getattr(importlib.import_module(f"actors.{subsystem}"), "__all__", ()))


def test_layering_rules_hold_in_the_source():
    bad = _violations()
    assert not bad, "\n".join(bad)


def test_the_static_check_catches_a_violation(tmp_path, monkeypatch):
    """The checker itself: an engine importing Ray or a pool, and a kernel importing actors, are found."""
    fake = tmp_path / "actors" / "demo"
    fake.mkdir(parents=True)
    (fake / "engine.py").write_text("def f():\n    import ray\n    from actors.demo.pool import run\n")
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "k.py").write_text("from actors.sweep.models import get_model\n")
    for d in ("jobs", "serve", "tune"):
        (tmp_path / d).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = "\n".join(_violations())
    assert "actors/demo/engine.py:2 imports ray (an engine module imports Ray)" in found
    assert "actors/demo/engine.py:3 imports actors.demo.pool (an engine module imports a Ray wrapper)" in found
    assert "kernels/k.py:1 imports actors.sweep.models (kernels import no actors and no Ray)" in found


def test_engine_modules_do_not_load_ray_when_imported():
    """Transitively too: importing every engine module in a fresh interpreter leaves `ray` unloaded."""
    modules = _engine_modules()
    assert len(modules) > 30   # the engines of sweep, te, validation, common and the kernels
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
            "print(len(loaded))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={"TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "0", out.stdout


@pytest.mark.parametrize("package", ["actors.common", "actors.llm", "actors.neuro", "actors.router", "actors.sweep", "actors.te",
                                     "actors.trainer", "actors.validation"])
def test_every_subsystem_has_a_public_api(package):
    subsystem = package.split(".")[1]
    names = _public_names(subsystem)
    assert names, f"{package}/__init__.py defines no __all__"
    mod = __import__(package, fromlist=["*"])
    assert all(hasattr(mod, n) for n in names), sorted(n for n in names if not hasattr(mod, n))
