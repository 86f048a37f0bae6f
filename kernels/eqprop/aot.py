"""Compile the EqProp Triton kernels for a GPU target without a GPU (ahead of time), and report their
shared memory: a CPU-side check that the compiled (not interpreted) kernels build for sm_90 and fit the
H100/H200 limit of 227 KiB of shared memory per block, which the interpreter cannot see.

    python -m kernels.eqprop.aot            # prints one line per configuration; exit 1 if one fails
    (TRITON_INTERPRET must be unset: the interpreter replaces @triton.jit functions)

Measured with triton 3.9 on the CPU box (2026-12-02): the onchip kernel at P = 128, BLOCK_B = 64 with
fp32 (3xTF32) operands needs 288 KiB and would not launch; that is why the engine uses BLOCK_B 16 at
P >= 128 and falls back to the chunked kernel on OutOfResources.
"""
from __future__ import annotations

import sys
from typing import Any

__all__ = ["SMEM_LIMIT_SM90", "CONFIGS", "compile_kernel", "main"]

SMEM_LIMIT_SM90 = 232448   # bytes: cudaDevAttrMaxSharedMemoryPerBlockOptin on H100 / H200
_ONCHIP_PTRS = ("s0p", "s1p", "s2p", "s3p", "d_ptr", "t_ptr", "w1p", "w2p", "w3p", "b1p", "b2p", "b3p", "res_ptr")
_FUSED_PTRS = ("out_ptr", "base_ptr", "bias_ptr", "a1_ptr", "b1_ptr", "a2_ptr", "b2_ptr", "own_ptr", "t_ptr", "g_ptr")


def _persistent(p: int, prec: int, block_b: int, chunked: bool) -> tuple[str, dict, dict, int]:
    common = dict(P0=p, P1=p, P2=16, P3=16, BLOCK_B=block_b, L=3, SYNC=False, SK0=False, SK1=False, SK2=False,
                  NUDGE=True, COST=0, ACT=0, PREC=prec)
    warps = 8 if p >= 128 else 4   # persistent.default_warps
    ptrs = {n: ("*bf16" if prec == 2 and n in ("w1p", "w2p", "w3p") else "*fp32") for n in _ONCHIP_PTRS}
    if chunked:
        k = min(p, 64)
        ptrs.pop("res_ptr")
        return "chunked", {**common, "K0": k, "K1": k, "K2": 16, "K3": 16}, ptrs, warps
    return "onchip", {**common, "PL": 16, "WREG": p * p + 16 * p <= 128 * 128}, ptrs, warps


def resident_config(p: int, prec: int, block_b: int, warps: int = 8) -> tuple[str, dict, dict, int]:
    """The resident variant (resident.py) at [H = p, p, 10] state layers."""
    consts = dict(P0=p, P1=p, P2=16, P3=16, PL=16, BLOCK_B=block_b, L=3, SYNC=True, SK0=False, SK1=False,
                  SK2=False, NUDGE=True, COST=0, ACT=0, PREC=prec)
    ptrs = {n: ("*bf16" if prec == 2 and n in ("w1p", "w2p", "w3p") else "*fp32") for n in _ONCHIP_PTRS}
    return "resident", consts, ptrs, warps


def _fused(prec: int, bm: int, bn: int, nudge: int) -> tuple[str, dict, dict, int]:
    consts = dict(HAS_BASE=False, HAS_A1=True, SKIP1=False, HAS_A2=nudge == 0, SKIP2=False, NUDGE=nudge, ACT=0,
                  PREC=prec, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=32)
    ptrs = {n: ("*bf16" if prec == 2 and n in ("b1_ptr", "b2_ptr") else "*fp32") for n in _FUSED_PTRS}
    return "fused", consts, ptrs, 8 if bm * bn >= 128 * 128 else 4   # fused._blocks


_SWEEP_PTRS = ("cur0", "cur1", "cur2", "cur3", "nxt0", "nxt1", "nxt2", "nxt3", "w1", "w2", "w3", "b1", "b2", "b3",
               "d_ptr", "t_ptr", "g_ptr")


def sweep_config(prec: int, bm: int, bn: int, bk: int, warps: int, bf16_states: bool = False) -> tuple[str, dict, dict, int]:
    """The grouped sweep kernel (fused._fused_sweep) at [H, H, 10] state layers, free phase."""
    consts = dict(L=3, SK0=False, SK1=False, SK2=False, NUDGE=0, ACT=0, PREC=prec, BM=bm, BN=bn, BK=bk, BNL=16)
    ptrs = {n: "*fp32" for n in _SWEEP_PTRS}
    for n in ("w1", "w2", "w3"):
        ptrs[n] = "*bf16" if prec == 2 else "*fp32"
    for n in ("cur0", "cur1", "cur2", "cur3", "nxt0", "nxt1", "nxt2", "nxt3"):
        ptrs[n] = "*bf16" if bf16_states else "*fp32"
    return "sweep", consts, ptrs, warps


# (kernel, constexprs, pointer types, num_warps) for the configurations the engine launches by default
CONFIGS: list[tuple[str, dict, dict, int]] = [
    _persistent(64, 2, 16, False), _persistent(128, 2, 16, False), _persistent(128, 0, 16, False),
    _persistent(128, 1, 32, False), _persistent(256, 2, 16, True), _persistent(256, 1, 16, True),
    _fused(2, 128, 128, 0), _fused(1, 128, 128, 0), _fused(2, 64, 16, 1), _fused(2, 32, 256, 1),
    _fused(2, 64, 128, 0), _fused(2, 64, 64, 0), _fused(1, 64, 64, 0),
    resident_config(256, 2, 16), resident_config(256, 2, 32), resident_config(128, 1, 16, 4),
]


def compile_kernel(kind: str, consts: dict[str, Any], ptrs: dict[str, str], num_warps: int,
                   arch: int = 90, num_stages: int | None = None) -> dict[str, Any]:
    """Compile one kernel for cuda:`arch`; {kernel, constexprs, shared bytes, fits}."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kernels.eqprop import fused, persistent, resident

    fn = {"onchip": persistent._settle_kernel, "chunked": persistent._settle_chunked, "fused": fused._fused_layer,
          "resident": resident._settle_resident, "sweep": fused._fused_sweep}[kind]
    sig = {name: ("constexpr" if name in consts else ptrs.get(name, "fp32" if name == "beta" else "i32"))
           for name in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    opts: dict[str, Any] = {"num_warps": num_warps}
    if num_stages is not None:
        opts["num_stages"] = num_stages
    k = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=opts)
    shared = int(k.metadata.shared)
    return {"kernel": kind, "constexprs": consts, "num_warps": num_warps, "shared": shared,
            "fits": shared <= SMEM_LIMIT_SM90}


def main() -> int:
    bad = 0
    for kind, consts, ptrs, warps in CONFIGS:
        r = compile_kernel(kind, consts, ptrs, warps)
        short = {k: v for k, v in consts.items() if k in ("P0", "BLOCK_B", "PREC", "BLOCK_M", "BLOCK_N", "NUDGE")}
        print(f"{kind} {short} warps={warps}: shared {r['shared']} B {'ok' if r['fits'] else 'OVER'}", flush=True)
        bad += not r["fits"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
