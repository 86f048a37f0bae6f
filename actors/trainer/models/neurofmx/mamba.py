"""The Mamba (selective state-space, S6) block in pure torch, with mamba_ssm's CUDA kernel where it imports.

Selective scan, per channel d and state n (Gu & Dao 2023, Algorithm 2):

    h_t = exp(delta_t[d] * A[d, n]) * h_{t-1} + delta_t[d] * B_t[n] * u_t[d]
    y_t[d] = sum_n C_t[n] * h_t[d, n] + D[d] * u_t[d]

Three implementations, one signature `(u, delta, A, B, C, D) -> y` on [batch, length, channels]:
- `selective_scan_ref`: the naive per-step recurrence (the reference the tests hold the others to);
- `selective_scan_parallel`: a Hillis-Steele scan of the associative map (a1, b1) o (a2, b2) =
  (a1 a2, a2 b1 + b2) in ceil(log2 L) vectorised steps — products of decays in (0, 1], so no
  overflow (no division by cumulative products);
- `selective_scan_cuda`: `mamba_ssm.ops.selective_scan_interface.selective_scan_fn` on CUDA tensors
  (mamba-ssm 2.3.2 does not import without its CUDA build, hence the guarded import; the GPU parity
  test compares it with the reference).
`scan="auto"` takes the CUDA kernel for CUDA tensors when it imported, else `sequential` for short
sequences on the CPU (fewer saved tensors than the log-depth scan) and `parallel` otherwise.

Mamba-2 (SSD, Dao & Gu 2024) restricts A to one scalar per head, which makes the scan a chunked
matrix product (the fast pure-torch path on the CPU, ~10x the S6 scans at the tiny config):

    h_t = exp(dt_t[h] * a[h]) * h_{t-1} + dt_t[h] * x_t[h, p] B_t[n]      (h_t: [heads, p, n])
    y_t[h, p] = sum_n C_t[n] h_t[h, p, n] + D[h] x_t[h, p]

`ssd_ref` is that recurrence step by step, `ssd_chunked` the block decomposition (intra-chunk
causal products + a recurrence over chunk states, all log-decays as segment sums <= 0, so every
exp is <= 1), `ssd_triton` mamba_ssm's `mamba_chunk_scan_combined` where it imports.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HAVE_MAMBA_KERNEL", "HAVE_SSD_KERNEL", "ConvKind", "Mamba2Block", "MambaBlock", "ScanKind",
           "causal_conv_silu", "selective_scan",
           "selective_scan_cuda", "selective_scan_parallel", "selective_scan_ref", "selective_scan_sequential",
           "ssd", "ssd_chunked", "ssd_ref", "ssd_triton"]

ScanKind = Literal["auto", "sequential", "parallel", "cuda"]
SSDKind = Literal["auto", "chunked", "triton"]
ConvKind = Literal["conv1d", "shifts", "compiled"]

try:   # only with mamba-ssm's CUDA build; everywhere else the pure-torch scans run
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _mamba_selective_scan_fn
    HAVE_MAMBA_KERNEL = True
except Exception:   # ImportError, or its CUDA extension failing to load
    _mamba_selective_scan_fn = None
    HAVE_MAMBA_KERNEL = False


def _import_ssd_kernel() -> Callable | None:
    """mamba_ssm's Triton SSD (`mamba_chunk_scan_combined`), also where its CUDA extension is missing.

    The kernels are pure Triton, but `mamba_ssm/__init__.py` imports the CUDA selective scan first, so a
    wheel built with MAMBA_SKIP_CUDA_BUILD=TRUE fails at `import mamba_ssm`. Then the package is entered
    without running its __init__ (its module object made from the spec, never executed) and only the
    Triton submodule is imported. Called with use_mem_eff_path off: no causal-conv1d here either."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
        return mamba_chunk_scan_combined
    except Exception:
        sys.modules.pop("mamba_ssm", None)
    spec = importlib.util.find_spec("mamba_ssm")
    if spec is None:
        return None
    sys.modules["mamba_ssm"] = importlib.util.module_from_spec(spec)   # the package, its __init__ not run
    try:
        return importlib.import_module("mamba_ssm.ops.triton.ssd_combined").mamba_chunk_scan_combined
    except Exception:
        for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
            sys.modules.pop(name)
        return None


_mamba_chunk_scan_combined = _import_ssd_kernel()
HAVE_SSD_KERNEL = _mamba_chunk_scan_combined is not None


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None) -> Tensor:
    """The recurrence step by step, with explicit loops over time (the test oracle).

    u, delta: [b, L, d]; A: [d, n]; B, C: [b, L, n]; D: [d] or None -> y [b, L, d].
    """
    b, L, d = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    y = torch.stack(ys, dim=1)
    return y if D is None else y + u * D


def selective_scan_sequential(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                              D: Tensor | None = None) -> Tensor:
    """The recurrence with the per-step terms precomputed for all t (vectorised outside the loop)."""
    dA = torch.exp(delta.unsqueeze(-1) * A)                       # [b, L, d, n]
    dBu = (delta * u).unsqueeze(-1) * B.unsqueeze(2)              # [b, L, d, n]
    h = torch.zeros_like(dA[:, 0])
    hs = []
    for t in range(u.shape[1]):
        h = dA[:, t] * h + dBu[:, t]
        hs.append(h)
    y = torch.einsum("bldn,bln->bld", torch.stack(hs, dim=1), C)
    return y if D is None else y + u * D


def selective_scan_parallel(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                            D: Tensor | None = None) -> Tensor:
    """Hillis-Steele inclusive scan over time: ceil(log2 L) steps of elementwise products."""
    a = torch.exp(delta.unsqueeze(-1) * A)                        # decay, in (0, 1]
    x = (delta * u).unsqueeze(-1) * B.unsqueeze(2)                # input
    L = u.shape[1]
    k = 1
    while k < L:
        x = torch.cat([x[:, :k], a[:, k:] * x[:, :-k] + x[:, k:]], dim=1)
        a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], dim=1)
        k *= 2
    y = torch.einsum("bldn,bln->bld", x, C)
    return y if D is None else y + u * D


def selective_scan_cuda(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None) -> Tensor:
    """mamba_ssm's fused CUDA kernel (layout [b, d, L] / [b, n, L]); only where it imported."""
    if _mamba_selective_scan_fn is None:
        raise RuntimeError("mamba_ssm's selective_scan_fn is not importable here (it needs its CUDA build)")
    y = _mamba_selective_scan_fn(u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A.contiguous(),
                                 B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(),
                                 None if D is None else D.float(), None, None, False)
    return y.transpose(1, 2)


_SCANS = {"sequential": selective_scan_sequential, "parallel": selective_scan_parallel, "cuda": selective_scan_cuda}


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                   kind: ScanKind = "auto") -> Tensor:
    """Dispatch (see the module docstring); the scan runs in float32 (or float64) even under autocast."""
    if kind == "auto":
        if u.is_cuda and HAVE_MAMBA_KERNEL:
            kind = "cuda"
        else:
            kind = "sequential" if u.shape[1] <= 256 and not u.is_cuda else "parallel"
    dtype = u.dtype if u.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=u.device.type, enabled=False):
        args = [t.to(dtype) for t in (u, delta, A, B, C)]
        return _SCANS[kind](*args, None if D is None else D.to(dtype))


# -- the causal depthwise convolution ------------------------------------------------------------

def _conv_shifts(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    K, L = weight.shape[-1], x.shape[1]
    xp = F.pad(x, (0, 0, K - 1, 0))
    y = bias + xp[:, :L] * weight[:, 0]
    for k in range(1, K):
        y = y + xp[:, k:k + L] * weight[:, k]
    return F.silu(y)


_compiled_conv: Callable | None = None


def causal_conv_silu_weights(x: Tensor, weight: Tensor, bias: Tensor, kind: ConvKind = "conv1d") -> Tensor:
    """SiLU(causal depthwise conv) of x [b, L, c] with a Conv1d's weight [c, 1, K] and bias [c]:
    y_t = SiLU(bias + sum_k w_k x_{t-K+1+k}). `conv1d`: PyTorch's depthwise kernel (channels-first: two
    transposes around it, ~25 % of a 100M step on the H200); `shifts`: the same sum as K shifted
    multiply-adds in the channels-last layout; `compiled`: `shifts` through torch.compile, which fuses it
    (and its backward) into a few Triton kernels on the GPU (eager `shifts` on the CPU)."""
    global _compiled_conv
    if kind == "conv1d":
        L = x.shape[1]
        return F.silu(F.conv1d(x.transpose(1, 2), weight, bias, padding=weight.shape[-1] - 1,
                               groups=weight.shape[0])[..., :L].transpose(1, 2))
    w, b = weight[:, 0].to(x.dtype), bias.to(x.dtype)
    if kind == "shifts" or not x.is_cuda:
        return _conv_shifts(x, w, b)
    if _compiled_conv is None:
        _compiled_conv = torch.compile(_conv_shifts, dynamic=False)
    return _compiled_conv(x, w, b)


def causal_conv_silu(x: Tensor, conv: nn.Conv1d, kind: ConvKind = "conv1d") -> Tensor:
    """`causal_conv_silu_weights` with an `nn.Conv1d(c, c, K, groups=c, padding=K-1)`."""
    return causal_conv_silu_weights(x, conv.weight, conv.bias, kind)


class MambaBlock(nn.Module):
    """Mamba-1 mixer: in_proj -> (x, z); x -> causal depthwise conv -> SiLU -> (delta, B, C) = x_proj;
    y = selective_scan(x, softplus(dt_proj(delta)), -exp(A_log), B, C, D) * SiLU(z) -> out_proj.
    Causal: output t depends on inputs <= t only. Initialisation as in the reference implementation
    (A = -[1..n] per channel, dt in [dt_min, dt_max] log-uniform)."""

    def __init__(self, d_model: int, d_state: int = 16, expand: int = 2, d_conv: int = 4, dt_rank: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, scan: ScanKind = "auto", conv: ConvKind = "conv1d"):
        super().__init__()
        self.d_model, self.d_state, self.scan, self.conv = d_model, d_state, scan, conv
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank or max(1, math.ceil(d_model / 16))
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model)

    def ssm_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(u, delta, A, B, C, z) for x [b, L, d_model]: what the scan consumes."""
        xz = self.in_proj(x)
        u, z = xz.chunk(2, dim=-1)
        u = causal_conv_silu(u, self.conv1d, self.conv)
        dbc = self.x_proj(u)
        dt, B, C = torch.split(dbc, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        return u, delta, -torch.exp(self.A_log.to(u.dtype)), B, C, z

    def forward(self, x: Tensor, scan: ScanKind | None = None) -> Tensor:
        u, delta, A, B, C, z = self.ssm_inputs(x)
        y = selective_scan(u, delta, A, B, C, self.D, kind=scan or self.scan).to(x.dtype)
        return self.out_proj(y * F.silu(z))


# -- Mamba-2 (SSD) ---------------------------------------------------------------------------------

def ssd_ref(x: Tensor, dt: Tensor, a: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None) -> Tensor:
    """The SSD recurrence step by step (test oracle). x: [b, L, h, p]; dt: [b, L, h]; a: [h] (< 0);
    B, C: [b, L, n]; D: [h] -> y [b, L, h, p]."""
    b, L, nh, p = x.shape
    state = x.new_zeros(b, nh, p, B.shape[-1])
    ys = []
    for t in range(L):
        decay = torch.exp(dt[:, t] * a)                                           # [b, h]
        state = decay[:, :, None, None] * state + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, None, None, :]
        ys.append((state * C[:, t, None, None, :]).sum(-1))
    y = torch.stack(ys, dim=1)
    return y if D is None else y + x * D[:, None]


def _segment_sums(v: Tensor) -> Tensor:
    """[..., T] -> [..., T, T] with out[i, j] = v[j+1] + ... + v[i] for i >= j, -inf above the diagonal."""
    T = v.shape[-1]
    cs = torch.cumsum(v, dim=-1)
    out = cs[..., :, None] - cs[..., None, :]
    return out.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=v.device).tril(), float("-inf"))


def ssd_chunked(x: Tensor, dt: Tensor, a: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                chunk: int = 16) -> Tensor:
    """The SSD scan as chunked matrix products (same arguments as `ssd_ref`)."""
    b, L, nh, p = x.shape
    pad = (-L) % chunk
    if pad:   # zero inputs with dt = 0 after the end: no decay, no input, outputs cut off below
        x, dt = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
    nc = x.shape[1] // chunk
    xc = (x * dt[..., None]).reshape(b, nc, chunk, nh, p)
    Bc, Cc = B.reshape(b, nc, chunk, -1), C.reshape(b, nc, chunk, -1)
    la = (dt * a).reshape(b, nc, chunk, nh).permute(0, 3, 1, 2)                  # [b, h, c, l] log-decays
    cum = torch.cumsum(la, dim=-1)
    # within a chunk: y_l = sum_{s <= l} (C_l . B_s) exp(sum_{s < r <= l} la_r) x_s
    decay_in = torch.exp(_segment_sums(la))                                      # [b, h, c, l, s]
    scores = torch.einsum("bcln,bcsn->bcls", Cc, Bc)
    y = torch.einsum("bcls,bhcls,bcshp->bclhp", scores, decay_in, xc)
    # the state each chunk leaves, from its own inputs: sum_s exp(cum_end - cum_s) x_s B_s
    to_end = torch.exp(cum[..., -1:] - cum)                                      # [b, h, c, l]
    chunk_states = torch.einsum("bcln,bhcl,bclhp->bchpn", Bc, to_end, xc)
    # states entering each chunk: a recurrence over chunks with the chunks' total decays
    totals = F.pad(cum[..., -1], (1, 0))                                         # [b, h, c + 1]
    decay_across = torch.exp(_segment_sums(totals))                              # [b, h, c+1, c+1]
    states = torch.cat([torch.zeros_like(chunk_states[:, :1]), chunk_states], dim=1)
    entering = torch.einsum("bhzc,bchpn->bzhpn", decay_across, states)[:, :-1]   # [b, c, h, p, n]
    y = y + torch.einsum("bcln,bchpn,bhcl->bclhp", Cc, entering, torch.exp(cum))
    y = y.reshape(b, nc * chunk, nh, p)[:, :L]
    x = x[:, :L]
    return y if D is None else y + x * D[:, None]


def ssd_triton(x: Tensor, dt: Tensor, a: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
               chunk: int = 64, dt_bias: Tensor | None = None) -> Tensor:
    """mamba_ssm's Triton SSD (`mamba_chunk_scan_combined`, one group); only where it imported. With
    `dt_bias`, dt is the raw projection and the kernel takes softplus(dt + dt_bias) itself (in fp32)."""
    if _mamba_chunk_scan_combined is None:
        raise RuntimeError("mamba_ssm's Triton SSD kernels are not importable here (they need CUDA)")
    return _mamba_chunk_scan_combined(x, dt, a, B[:, :, None], C[:, :, None], chunk, D=D, dt_bias=dt_bias,
                                      dt_softplus=dt_bias is not None)


def ssd(x: Tensor, dt: Tensor, a: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, kind: SSDKind = "auto",
        chunk: int = 16, dt_bias: Tensor | None = None) -> Tensor:
    """Dispatch: the Triton kernel for CUDA tensors where it imported, else the chunked torch scan (fp32).
    With `dt_bias` the step is softplus(dt + dt_bias) (fused into the Triton kernel)."""
    if kind == "auto":
        kind = "triton" if x.is_cuda and HAVE_SSD_KERNEL else "chunked"
    if kind == "triton":
        return ssd_triton(x, dt, a, B, C, D, chunk=chunk, dt_bias=dt_bias)
    dtype = x.dtype if x.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        dt = dt.to(dtype) if dt_bias is None else F.softplus(dt.to(dtype) + dt_bias.to(dtype))
        return ssd_chunked(*(t.to(dtype) for t in (x, dt, a, B, C)), None if D is None else D.to(dtype), chunk=chunk)


def _mamba2_in(x: Tensor, w_in: Tensor, b_in: Tensor, w_conv: Tensor, b_conv: Tensor, conv: ConvKind,
               d_inner: int, d_state: int, n_heads: int, norm: tuple[Tensor, Tensor, float] | None = None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """A Mamba-2 block up to its scan: (x [b, L, d_inner], B, C, z, raw dt) — one function, so that
    torch.compile fuses the projection's epilogue, the causal conv and SiLU into a few kernels. `norm`
    (weight, bias, eps): the layer's pre-norm LayerNorm first, inside the same graph (eager LayerNorm
    and its autocast casts were 12 % of the compiled 100M step's device time)."""
    if norm is not None:
        x = F.layer_norm(x, (x.shape[-1],), norm[0], norm[1], norm[2])
    z, xbc, dt = torch.split(F.linear(x, w_in, b_in), [d_inner, d_inner + 2 * d_state, n_heads], -1)
    xbc = causal_conv_silu_weights(xbc, w_conv, b_conv, conv)
    xs, B, C = torch.split(xbc, [d_inner, d_state, d_state], dim=-1)
    return xs, B, C, z, dt


def _mamba2_out(y: Tensor, z: Tensor, w_norm: Tensor, eps: float, w_out: Tensor, b_out: Tensor,
                residual: Tensor | None = None) -> Tensor:
    """out_proj(RMSNorm(y * SiLU(z))): the block after its scan; plus `residual` where given (the layer's
    skip connection, in the same graph)."""
    g = y.to(z.dtype) * F.silu(z)
    out = F.linear(F.rms_norm(g, (g.shape[-1],), w_norm.to(g.dtype), eps), w_out, b_out)
    return out if residual is None else residual + out


_compiled_mamba2: tuple[Callable, Callable] | None = None


def _mamba2_parts(compiled: bool) -> tuple[Callable, Callable]:
    """The two halves, eager or through torch.compile (one compiled function shared by every block: the
    weights are arguments, so blocks of one shape reuse one graph). The scan between them stays mamba_ssm's
    Triton kernel, outside the compiled graphs."""
    global _compiled_mamba2
    if not compiled:
        return _mamba2_in, _mamba2_out
    if _compiled_mamba2 is None:
        _compiled_mamba2 = (torch.compile(_mamba2_in, dynamic=False), torch.compile(_mamba2_out, dynamic=False))
    return _compiled_mamba2


class Mamba2Block(nn.Module):
    """Mamba-2 mixer: in_proj -> (z, xBC, dt); xBC -> causal depthwise conv -> SiLU -> (x, B, C);
    y = ssd(x, softplus(dt + dt_bias), -exp(A_log), B, C, D); out_proj(RMSNorm(y * SiLU(z))). Causal.
    `compile`: on CUDA the parts around the scan run through torch.compile (`_mamba2_parts`)."""

    def __init__(self, d_model: int, d_state: int = 16, expand: int = 2, d_conv: int = 4, headdim: int = 16,
                 chunk: int = 16, dt_min: float = 1e-3, dt_max: float = 1e-1, scan: SSDKind = "auto",
                 conv: ConvKind = "conv1d", compile: bool = False):
        super().__init__()
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"expand * d_model = {self.d_inner} is not a multiple of headdim {headdim}")
        self.d_state, self.headdim, self.chunk, self.scan, self.conv = d_state, headdim, chunk, scan, conv
        self.use_compile = compile   # not `self.compile`: that would shadow nn.Module.compile()
        self.n_heads = self.d_inner // headdim
        conv_dim = self.d_inner + 2 * d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * d_state + self.n_heads)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1)
        dt = torch.exp(torch.rand(self.n_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.n_heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.n_heads))
        self.norm = nn.RMSNorm(self.d_inner, eps=1e-5)
        self.out_proj = nn.Linear(self.d_inner, d_model)

    def _parts(self, x: Tensor, compiled: bool | None = None) -> tuple[Callable, Callable, ConvKind]:
        compiled = self.use_compile and x.is_cuda if compiled is None else compiled
        pre, post = _mamba2_parts(compiled)
        return pre, post, ("shifts" if compiled else self.conv)   # inside a compiled graph the shifts fuse

    def forward(self, x: Tensor, scan: SSDKind | None = None, compiled: bool | None = None,
                pre_norm: nn.LayerNorm | None = None, residual: bool = False) -> Tensor:
        """`compiled`: None = `compile` (the constructor's) on CUDA tensors; True / False force it (True on the CPU needs
        a C++ compiler for Inductor: the CPU test of the compiled halves). `pre_norm` and `residual`: a whole
        residual layer, x + block(pre_norm(x)), with the norm and the skip inside the compiled halves."""
        b, L, _ = x.shape
        pre, post, conv = self._parts(x, compiled)
        norm = None if pre_norm is None else (pre_norm.weight, pre_norm.bias, pre_norm.eps)
        xs, B, C, z, dt = pre(x, self.in_proj.weight, self.in_proj.bias, self.conv1d.weight, self.conv1d.bias, conv,
                              self.d_inner, self.d_state, self.n_heads, norm)
        A_log = self.A_log if self.A_log.dtype == torch.float64 else self.A_log.float()   # a float64 block stays float64
        y = ssd(xs.reshape(b, L, self.n_heads, self.headdim), dt, -torch.exp(A_log), B, C, self.D,
                kind=scan or self.scan, chunk=self.chunk, dt_bias=self.dt_bias)
        return post(y.reshape(b, L, self.d_inner), z, self.norm.weight, self.norm.eps, self.out_proj.weight,
                    self.out_proj.bias, x if residual else None)
