"""Symbolic derivatives of a registered model, lowered to batched numpy and torch.

The tangent (variational) equations of the Lyapunov spectrum and the Newton corrector of
continuation both need exact Jacobians: finite differences would cost n extra right-hand-side
calls per evaluation and bias the spectrum's sum, which the trace of the exact Jacobian fixes.
SymPy differentiates the model's equations once; `lambdify` (with common-subexpression
elimination) turns the matrix into vectorised code, as models.py does for the right-hand side.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from actors.common.errors import InputError
from actors.sweep.models import CompiledModel, _torch_module, get_model


class ModelDerivatives:
    """dF/du (n x n) and dF/dp (n x m) of a model, as numpy and torch functions.

    jac_numpy(u[..., n], p[..., m]) -> [..., n, n]; dfdp_numpy(u, p) -> [..., n, m];
    jac_torch(u[B, n], p[B, m]) -> [B, n, n] on u's device and dtype.
    """

    def __init__(self, model: CompiledModel):
        self.model = model
        self.n = len(model.state_names)
        self.m = len(model.param_names)
        self.jacobian = model.jacobian  # SymPy Matrix, built by CompiledModel
        self.param_jacobian = sp.Matrix(model.equations).jacobian(model.param_symbols)
        args = (model.state_symbols, model.param_symbols)
        flat_j = list(self.jacobian)  # row-major n*n entries
        flat_p = list(self.param_jacobian)
        self._j_np = sp.lambdify(args, flat_j, modules="numpy", cse=True)
        self._p_np = sp.lambdify(args, flat_p, modules="numpy", cse=True)
        self._j_torch = sp.lambdify(args, flat_j, modules=[_torch_module()], cse=True)
        self._p_cols: dict[int, object] = {}
        self.trace = sp.simplify(self.jacobian.trace())
        # the tangent field: F and the state-dependent entries of J in one CSE'd function; entries
        # that depend on parameters only are evaluated once per batch (`tangent_field_torch`)
        states = set(model.state_symbols)
        self._varying = [i for i, e in enumerate(flat_j) if e.free_symbols & states]
        self._f_and_j = sp.lambdify(args, list(model.equations) + [flat_j[i] for i in self._varying],
                                    modules=[_torch_module()], cse=True)

    # ---- numpy ------------------------------------------------------------------------------------
    def _np_matrix(self, fn, u: np.ndarray, p: np.ndarray, cols: int) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        p = np.asarray(p, dtype=np.float64)
        batch = np.broadcast_shapes(u.shape[:-1], p.shape[:-1])
        entries = fn([u[..., i] for i in range(u.shape[-1])], [p[..., j] for j in range(p.shape[-1])])
        flat = np.stack([np.broadcast_to(np.asarray(e, dtype=np.float64), batch) for e in entries], axis=-1)
        return flat.reshape(*batch, self.n, cols)

    def jac_numpy(self, u: np.ndarray, p: np.ndarray) -> np.ndarray:
        """dF/du at each row, [..., n, n] float64."""
        return self._np_matrix(self._j_np, u, p, self.n)

    def dfdp_numpy(self, u: np.ndarray, p: np.ndarray) -> np.ndarray:
        """dF/dp at each row, [..., n, m] float64."""
        return self._np_matrix(self._p_np, u, p, self.m)

    def dfdp_column_numpy(self, u: np.ndarray, p: np.ndarray, j: int) -> np.ndarray:
        """dF/dp_j at each row, [..., n]: continuation's parameter column, without evaluating the
        others (GASLIT-AF's d/dn_sig holds log(Lambda), undefined where Lambda < 0)."""
        if j not in self._p_cols:
            col = list(self.param_jacobian[:, j])
            self._p_cols[j] = sp.lambdify((self.model.state_symbols, self.model.param_symbols), col,
                                          modules="numpy", cse=True)
        return self._np_matrix(self._p_cols[j], u, p, 1)[..., 0]

    # ---- torch ------------------------------------------------------------------------------------
    def jac_torch(self, u, p):
        """dF/du for a batch, [B, n, n]; constant entries are broadcast, not recomputed per row."""
        import torch

        B = u.shape[0]
        entries = self._j_torch([u[:, i] for i in range(self.n)], [p[:, j] for j in range(p.shape[1])])
        cols = [e if torch.is_tensor(e) and e.shape == (B,)
                else torch.as_tensor(e, dtype=u.dtype, device=u.device).expand(B) for e in entries]
        return torch.stack(cols, dim=1).reshape(B, self.n, self.n)

    def tangent_field_torch(self, p):
        """For a fixed batch of parameters p [B, m]: a function u [B, n] -> (F [B, n], J [B, n, n]).

        Per call it evaluates only F and the Jacobian entries that depend on the state (Lorenz: 4
        of 9); the rest are computed here once. On a CPU each torch op costs microseconds of
        dispatch whatever its size, so the op count is the cost of a tangent RK4 step.
        """
        import torch

        B, n = p.shape[0], self.n
        zeros = torch.zeros(B, n, dtype=p.dtype, device=p.device)
        J_const = self.jac_torch(zeros, p)  # correct for the parameter-only entries
        entries = [J_const[:, i // n, i % n] for i in range(n * n)]
        pcols = [p[:, j] for j in range(p.shape[1])]

        def full(e, like):
            return e if torch.is_tensor(e) and e.shape == (B,) else torch.as_tensor(e, dtype=like.dtype,
                                                                                    device=like.device).expand(B)

        def field(u):
            out = self._f_and_j([u[:, i] for i in range(n)], pcols)
            F = torch.stack([full(e, u) for e in out[:n]], dim=1)
            for i, e in zip(self._varying, out[n:]):
                entries[i] = full(e, u)
            return F, torch.stack(entries, dim=1).reshape(B, n, n)

        return field


_CACHE: dict[str, ModelDerivatives] = {}


def derivatives(model: CompiledModel | str) -> ModelDerivatives:
    """The (cached, by equation hash) symbolic derivatives of `model`."""
    model = get_model(model) if isinstance(model, str) else model
    if model.hash not in _CACHE:
        _CACHE[model.hash] = ModelDerivatives(model)
    return _CACHE[model.hash]


def param_index(model: CompiledModel, name: str, field: str = "parameter") -> int:
    """Column of parameter `name`; an unknown name raises InputError listing the allowed ones."""
    if name not in model.param_names:
        raise InputError(field, f"{name!r} is not a parameter of model {model.name}", ", ".join(model.param_names))
    return model.param_names.index(name)
