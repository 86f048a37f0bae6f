"""SymPy equations -> Triton source for one fused per-trajectory ODE kernel, generated once and cached.

One lane integrates one trajectory: the state, its step size and the error controller live in
registers as one scalar variable per state component (fully unrolled: a 5-state Tsit5 step is ~200
straight-line lines), the right-hand side is inlined after SymPy's common-subexpression
elimination, and parameters are loaded once per lane. This is DiffEqGPU.jl's design, in Python.

Where things are: equations -> statements in kernels/ode/symbolic.py; the kernel's arguments in
one table, kernels/ode/buffers.py; the method's stages in kernels/ode/steps.py; the step kernel,
one method per feature, in kernels/ode/writer.py. This module holds what a module is specialised
for (`KernelSpec`) and the cache: the source is written to a cache directory and imported from
there (Triton's JIT reads the source of the functions it compiles), keyed by a hash of the
equations, the solver and the options.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from kernels.ode.symbolic import CodegenError, OdeSystem, rhs_lines, system_from_model
from kernels.ode.tableaus import TABLEAUS
from kernels.ode.writer import KernelWriter

__all__ = ["CACHE_DIR", "CODEGEN_VERSION", "CodegenError", "KernelSpec", "OdeSystem", "kernel_source",
           "load_kernels", "rhs_lines", "system_from_model"]

CODEGEN_VERSION = "11"   # 11: non-finite folded constants written as float("inf"), not a bare `inf`
CACHE_DIR = Path(os.environ.get("ATTRACTOR_KERNEL_CACHE", Path.home() / ".cache" / "attractor" / "ode_kernels"))


@dataclass(frozen=True)
class KernelSpec:
    """What one generated module is specialised for."""

    system: OdeSystem
    solver: str               # rk4 | tsit5 | dopri5
    dtype: str                # float32 | float64
    lyapunov: bool = False    # integrate a renormalised perturbation (Benettin) alongside
    save_every: bool = False  # store the state every k-th accepted step
    features: bool = True     # running min/max/mean over the final window
    interp: bool = False      # store the dense-output state at given times (t_eval)
    section: tuple[int, int] | None = None  # Poincare section (state index, direction +1/-1/0)

    @property
    def tangent(self) -> bool:
        """The perturbation is a tangent vector v' = J(u) v through the same explicit RK stages.

        Why not a twin state u + d0 s: the twin's separation is a difference of two states, resolved
        only down to ~eps |u| (in FP32 that floor is 2% of d0 = 1e-4 per step), and the twin can
        leave the model's domain where the orbit does not. Rosenbrock keeps the twin (its stages
        solve with W = I - gamma h J, whose linearisation the tangent would need too).
        """
        return self.lyapunov and TABLEAUS[self.solver].kind != "rosenbrock"

    @property
    def key(self) -> str:
        text = (f"{CODEGEN_VERSION}|{self.system.digest}|{self.solver}|{self.dtype}|{self.lyapunov}|"
                f"{self.save_every}|{self.features}|{self.interp}|{self.section}")
        return f"{self.system.name}_{self.solver}_{self.dtype}_" + hashlib.sha256(text.encode()).hexdigest()[:12]


def kernel_source(spec: KernelSpec) -> str:
    """The Python/Triton source of the step kernel (and for adaptive solvers, the init kernel)."""
    return KernelWriter(spec, CODEGEN_VERSION).source()


_LOADED: dict[tuple[str, bool], ModuleType] = {}


def load_kernels(spec: KernelSpec, *, interpret: bool = False) -> ModuleType:
    """Generate (once) and import the module holding `step_kernel` (and `init_kernel`).

    interpret=True sets TRITON_INTERPRET=1 for the process (Triton reads it when @triton.jit
    decorates and again at launch), so the same kernels run on the CPU with numpy (CI). Set it
    before any Triton kernel is launched; one process runs either interpreted or compiled kernels.
    """
    key = (spec.key, interpret)
    if key in _LOADED:
        return _LOADED[key]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"{spec.key}.py"
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(kernel_source(spec))
        os.replace(tmp, path)  # atomic: concurrent workers never import a half-written file
    name = f"attractor_ode_{spec.key}" + ("_interp" if interpret else "")
    if interpret:  # process-wide: Triton also reads it lazily at launch (its gluon import asserts it)
        os.environ["TRITON_INTERPRET"] = "1"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module
    mod_spec.loader.exec_module(module)
    _LOADED[key] = module
    return module
