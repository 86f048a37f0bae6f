"""NeuroFMX's parts: tokenizer contracts and time alignment across rates, the pure-torch selective scans
(S6 and SSD) against a naive float64 recurrence and a closed form, block causality, Perceiver fusion
shapes and masking (perturbed masked tokens change nothing), the registered model's training step in
each stage, its per-sample seeding, and config / batch errors naming the field."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from actors.common.errors import InputError
from actors.trainer import build_model, registered_models
from actors.trainer.models.neurofmx import NeuroFMX
from actors.trainer.models.neurofmx.mamba import (
    HAVE_MAMBA_KERNEL,
    HAVE_SSD_KERNEL,
    Mamba2Block,
    MambaBlock,
    causal_conv_silu,
    selective_scan,
    selective_scan_parallel,
    selective_scan_ref,
    selective_scan_sequential,
    ssd,
    ssd_chunked,
    ssd_ref,
    ssd_triton,
)
from actors.trainer.models.neurofmx.perceiver import PerceiverFusion
from actors.trainer.models.neurofmx.tokenizers import (
    BinnedSpikeTokenizer,
    EventSpikeTokenizer,
    PatchTokenizer,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tests/trainer/conftest.py


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


# -- tokenizers -------------------------------------------------------------------------------------

def test_tokenizer_contracts_shapes_times_and_masks():
    g = _g()
    counts = torch.poisson(torch.full((2, 100, 6), 0.3), generator=g)
    tk = BinnedSpikeTokenizer(6, 16, bin_s=0.01, bins_per_token=3)(counts, lengths=torch.tensor([100, 40]))
    assert tk.tokens.shape == (2, 34, 16) and tk.dt == pytest.approx(0.03) and torch.equal(tk.t0, torch.zeros(2))
    assert tk.mask[0].all() and tk.mask[1].sum() == 14            # token i valid iff 3 i < 40
    assert torch.allclose(tk.times()[0, :2], torch.tensor([0.015, 0.045]))
    lfp = PatchTokenizer(4, 16, rate_hz=250.0, patch=5, modality="lfp")(torch.randn(2, 250, 4, generator=g))
    eeg = PatchTokenizer(3, 16, rate_hz=200.0, patch=4, modality="eeg")(torch.randn(2, 203, 3, generator=g))
    assert lfp.tokens.shape == (2, 50, 16) and lfp.dt == pytest.approx(0.02)
    assert eeg.tokens.shape == (2, 51, 16) and eeg.mask.all()        # a trailing partial patch is a token
    assert eeg.metadata == {"modality": "eeg", "kind": "patch", "rate_hz": 200.0, "patch": 4, "n_channels": 3}


def test_modalities_of_different_rates_align_in_time():
    """An impulse at time tau changes exactly the token whose window [t0 + i dt, t0 + (i+1) dt) holds tau,
    in every modality, and `window(tau)` names that token."""
    spk = BinnedSpikeTokenizer(3, 8, bin_s=0.01, bins_per_token=2)
    lfp = PatchTokenizer(2, 8, rate_hz=250.0, patch=5)
    eeg = PatchTokenizer(2, 8, rate_hz=200.0, patch=4)
    base = {"spk": torch.zeros(1, 100, 3), "lfp": torch.zeros(1, 250, 2), "eeg": torch.zeros(1, 200, 2)}
    ref = {"spk": spk(base["spk"]), "lfp": lfp(base["lfp"]), "eeg": eeg(base["eeg"])}
    rng = np.random.default_rng(0)
    for tau in rng.uniform(0, 1, size=12):
        for name, tok, rate in (("spk", spk, 100.0), ("lfp", lfp, 250.0), ("eeg", eeg, 200.0)):
            x = base[name].clone()
            x[0, int(tau * rate), 0] = 1.0                            # the sample / bin holding tau
            changed = (tok(x).tokens - ref[name].tokens).abs().sum(-1)[0].nonzero().flatten().tolist()
            i = int(ref[name].window(tau)[0])
            assert changed == [i], (name, tau)
            t_i = ref[name].times()[0, i]
            assert abs(float(t_i) - tau) <= ref[name].dt / 2 + 1e-6    # the token's time is its window's centre


def test_event_tokens_one_per_spike_at_bin_centres():
    counts = torch.zeros(2, 10, 3)
    counts[0, 2, 1] = 2
    counts[0, 7, 0] = 1
    counts[1, 0, 2] = 1
    tk = EventSpikeTokenizer(3, 8, bin_s=0.01, max_events=4)(counts, t0=torch.tensor([0.0, 1.0]))
    assert tk.mask.tolist() == [[True, True, True, False], [True, False, False, False]]
    assert tk.metadata["units"][0, :3].tolist() == [1, 1, 0]
    assert torch.allclose(tk.times()[0, :3], torch.tensor([0.025, 0.025, 0.075]))
    assert torch.allclose(tk.times()[1, 0], torch.tensor(1.005))
    assert (tk.tokens[0, 3] == 0).all()
    many = EventSpikeTokenizer(3, 8, bin_s=0.01, max_events=2)(counts)
    assert many.metadata["truncated"].tolist() == [1, 0]


# -- selective scans --------------------------------------------------------------------------------

def _scan_inputs(b=3, L=29, d=5, n=4, seed=0):
    g = _g(seed)
    f64 = dict(generator=g, dtype=torch.float64)
    return (torch.randn(b, L, d, **f64), torch.rand(b, L, d, **f64) * 0.5, -torch.rand(d, n, **f64) * 3,
            torch.randn(b, L, n, **f64), torch.randn(b, L, n, **f64), torch.randn(d, **f64))


def test_s6_scans_match_the_naive_recurrence_in_float64():
    args = _scan_inputs()
    ref = selective_scan_ref(*args)
    assert torch.allclose(selective_scan_sequential(*args), ref, atol=1e-12, rtol=0)
    assert torch.allclose(selective_scan_parallel(*args), ref, atol=1e-12, rtol=0)
    assert torch.allclose(selective_scan(*args, kind="auto"), ref, atol=1e-12, rtol=0)


def test_s6_scan_closed_form_for_a_constant_input():
    """d = n = 1, u = B = C = 1, constant delta and A: h_t = delta (1 - q^(t+1)) / (1 - q), q = exp(delta A)."""
    L, delta, A = 40, 0.3, -0.7
    ones = torch.ones(1, L, 1, dtype=torch.float64)
    y = selective_scan_ref(ones, delta * ones, torch.tensor([[A]], dtype=torch.float64), ones, ones)
    q = math.exp(delta * A)
    expect = torch.tensor([delta * (1 - q ** (t + 1)) / (1 - q) for t in range(L)], dtype=torch.float64)
    assert torch.allclose(y[0, :, 0], expect, atol=1e-14)


@pytest.mark.parametrize("chunk", [1, 4, 7, 16, 64])
def test_ssd_chunked_matches_the_naive_recurrence_in_float64(chunk):
    g = _g(1)
    f64 = dict(generator=g, dtype=torch.float64)
    b, L, h, p, n = 2, 37, 3, 4, 5
    x, dt = torch.randn(b, L, h, p, **f64), torch.rand(b, L, h, **f64)
    a, B, C, D = -torch.rand(h, **f64) * 4, torch.randn(b, L, n, **f64), torch.randn(b, L, n, **f64), torch.randn(h, **f64)
    assert torch.allclose(ssd_chunked(x, dt, a, B, C, D, chunk=chunk), ssd_ref(x, dt, a, B, C, D), atol=1e-12, rtol=0)


def test_ssd_with_dt_bias_scans_with_the_softplus_of_the_biased_step():
    """`dt_bias` (what the Triton kernel fuses) means the step softplus(dt + dt_bias), float64."""
    g = _g(4)
    f64 = dict(generator=g, dtype=torch.float64)
    b, L, h, p, n = 2, 29, 3, 4, 5
    x, dt, bias = torch.randn(b, L, h, p, **f64), torch.randn(b, L, h, **f64), torch.randn(h, **f64)
    a, B, C, D = -torch.rand(h, **f64) * 4, torch.randn(b, L, n, **f64), torch.randn(b, L, n, **f64), torch.randn(h, **f64)
    want = ssd_ref(x, torch.log1p(torch.exp(dt + bias)), a, B, C, D)
    torch.testing.assert_close(ssd(x, dt, a, B, C, D, kind="chunked", chunk=8, dt_bias=bias), want, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="Inductor's CPU backend needs a C++ compiler")
def test_the_compiled_halves_of_a_mamba2_block_equal_the_eager_block_in_float64():
    """`compile: true`'s graphs (the block's parts around the scan through torch.compile; here Inductor's
    C++ backend on the CPU, on CUDA its Triton kernels) against the eager block with the nn.Conv1d: output,
    input gradient and every parameter gradient in float64, to 1e-12 of each tensor's largest entry."""
    import actors.trainer.models.neurofmx.mamba as mamba

    torch.manual_seed(0)
    m = Mamba2Block(32, d_state=8, expand=2, headdim=8, chunk=16, compile=True).double()
    ln = torch.nn.LayerNorm(32).double()
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.normal_(0, 0.1)
    x, w = torch.randn(3, 20, 32, dtype=torch.float64, generator=_g(6)), torch.randn(3, 20, 32, dtype=torch.float64)
    for layer in (False, True):   # the block alone; the whole residual layer x + block(LayerNorm(x))
        kw = {"pre_norm": ln, "residual": True} if layer else {}
        params = [*m.parameters(), *ln.parameters()]
        results = []
        for compiled in (False, True):
            m.zero_grad()
            ln.zero_grad()
            xx = x.clone().requires_grad_(True)
            (m(xx, compiled=compiled, **kw) * w).sum().backward()
            grads = [p.grad.clone() for p in params if p.grad is not None]
            results.append([xx.grad] + grads + [m(x, compiled=compiled, **kw).detach()])
        assert len(results[1]) == len(results[0]) == len(params) - 2 * (not layer) + 2
        for got, want in zip(results[1], results[0], strict=True):
            assert ((got - want).abs().max() / want.abs().max()).item() < 1e-12
    assert mamba._compiled_mamba2 is not None


def test_a_mamba2_layer_with_its_norm_and_skip_inside_the_block_equals_the_layer_around_it():
    """`Mamba2Block(x, pre_norm=ln, residual=True)` (how the model runs each layer, so that the compiled
    halves hold the norm and the skip) is x + block(ln(x)) exactly, output and gradients, in eager float64."""
    torch.manual_seed(0)
    m = Mamba2Block(16, d_state=4, expand=2, headdim=8, chunk=8).double()
    ln = torch.nn.LayerNorm(16).double()
    x = torch.randn(2, 13, 16, dtype=torch.float64, generator=_g(11))
    outs, grads = [], []
    for inside in (True, False):
        xx = x.clone().requires_grad_(True)
        y = m(xx, pre_norm=ln, residual=True) if inside else xx + m(ln(xx))
        y.square().sum().backward()
        outs.append(y.detach())
        grads.append(xx.grad)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-14)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-13)


@pytest.mark.parametrize("block", ["mamba1", "mamba2"])
def test_mamba_blocks_are_causal_and_equal_their_reference_scan(block, monkeypatch):
    torch.manual_seed(0)
    m = (MambaBlock(8, d_state=4, expand=2) if block == "mamba1" else Mamba2Block(8, d_state=4, expand=2, headdim=4, chunk=4))
    m = m.double()
    x = torch.randn(2, 23, 8, dtype=torch.float64, generator=_g(2))
    y = m(x)
    # the same block with its scan replaced by the naive recurrence
    import actors.trainer.models.neurofmx.mamba as mamba

    if block == "mamba1":
        monkeypatch.setitem(mamba._SCANS, "sequential", selective_scan_ref)
        monkeypatch.setitem(mamba._SCANS, "parallel", selective_scan_ref)
    else:
        monkeypatch.setattr(mamba, "ssd_chunked", lambda x, dt, a, B, C, D, chunk: ssd_ref(x, dt, a, B, C, D))
    assert torch.allclose(m(x), y, atol=1e-12, rtol=0)
    x2 = x.clone()
    x2[:, 15:] += torch.randn(2, 8, 8, dtype=torch.float64, generator=_g(3))
    y2 = m(x2)
    assert torch.allclose(y2[:, :15], y[:, :15], atol=1e-13, rtol=0) and not torch.allclose(y2[:, 15:], y[:, 15:])


def _conv_grads(conv: torch.nn.Conv1d, x: torch.Tensor, kind: str, w: torch.Tensor) -> list[torch.Tensor]:
    conv.zero_grad()
    xx = x.clone().requires_grad_(True)
    y = causal_conv_silu(xx, conv, kind)
    (y * w).sum().backward()
    return [y.detach(), xx.grad, conv.weight.grad.clone(), conv.bias.grad.clone()]


def test_the_shifted_conv_equals_the_depthwise_conv1d_and_its_gradients():
    """The channels-last sum of K shifted multiply-adds is the causal depthwise Conv1d (float64, output,
    input and parameter gradients)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3).double()
    x, w = torch.randn(3, 17, 6, dtype=torch.float64, generator=_g(5)), torch.randn(3, 17, 6, dtype=torch.float64)
    for got, want in zip(_conv_grads(conv, x, "shifts", w), _conv_grads(conv, x, "conv1d", w), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
def test_the_compiled_conv_equals_conv1d_on_the_gpu():
    """torch.compile of the shifted sum (Inductor's fused kernels) against nn.Conv1d on CUDA, fp32, with
    the gradients; norm-relative 1e-5 (both accumulate K = 4 products in fp32)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(96, 96, 4, groups=96, padding=3).cuda()
    g = torch.Generator(device="cuda").manual_seed(1)
    x, w = torch.randn(8, 100, 96, device="cuda", generator=g), torch.randn(8, 100, 96, device="cuda", generator=g)
    for got, want in zip(_conv_grads(conv, x, "compiled", w), _conv_grads(conv, x, "conv1d", w), strict=True):
        assert ((got - want).norm() / want.norm()).item() < 1e-5


@pytest.mark.skipif(HAVE_MAMBA_KERNEL, reason="mamba_ssm's kernel imported here")
def test_the_cuda_scan_is_refused_where_mamba_ssm_does_not_import():
    with pytest.raises(RuntimeError, match="not importable"):
        selective_scan(*_scan_inputs(), kind="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_MAMBA_KERNEL, reason="mamba_ssm's CUDA extension is not built here")
def test_mamba_ssm_cuda_selective_scan_matches_the_reference_on_the_gpu():
    args = [t.float().cuda() for t in _scan_inputs(b=2, L=128, d=16, n=8)]
    ref = selective_scan_ref(*[t.double() for t in args])
    assert torch.allclose(selective_scan(*args, kind="cuda").double(), ref, atol=2e-3, rtol=2e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_SSD_KERNEL, reason="mamba_ssm is not installed here")
def test_mamba_ssm_triton_ssd_matches_the_reference_and_the_torch_gradients_on_the_gpu():
    """Forward against the float64 recurrence; backward (what training uses) against autograd through
    the chunked torch scan, both in fp32 on the GPU. mamba_ssm's kernels multiply in TF32 (10-bit
    mantissa, unit roundoff 2^-11 = 4.9e-4): elementwise they are off by up to ~0.5 % (H200, 2026-12-03),
    so the bound is on the norm-relative error, 1e-2."""
    g = torch.Generator(device="cuda").manual_seed(0)
    b, L, h, p, n = 2, 256, 4, 16, 16
    x, dt = torch.randn(b, L, h, p, device="cuda", generator=g), torch.rand(b, L, h, device="cuda", generator=g) * 0.1
    a = -torch.rand(h, device="cuda", generator=g)
    B, C = torch.randn(b, L, n, device="cuda", generator=g), torch.randn(b, L, n, device="cuda", generator=g)
    D = torch.randn(h, device="cuda", generator=g)
    ref = ssd_ref(*(t.double() for t in (x, dt, a, B, C, D)))
    y = ssd_triton(x, dt, a, B, C, D).double()
    assert ((y - ref).norm() / ref.norm()).item() < 1e-2
    w = torch.randn(b, L, h, p, device="cuda", generator=g)
    grads = []
    for fn in (lambda *t: ssd_triton(*t), lambda *t: ssd_chunked(*t, chunk=64)):
        leaves = [t.clone().requires_grad_(True) for t in (x, dt, B, C, D)]
        xx, dd, bb, cc, DD = leaves
        (fn(xx, dd, a, bb, cc, DD) * w).sum().backward()
        grads.append([t.grad for t in leaves])
    for name, gt, gc in zip(("x", "dt", "B", "C", "D"), *grads, strict=True):
        err = ((gt - gc).norm() / gc.norm()).item()
        assert err < 1e-2, f"d{name}: relative error {err:.2e}"


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_SSD_KERNEL, reason="mamba_ssm is not installed here")
def test_the_fused_dt_bias_and_the_compiled_mamba2_block_equal_the_eager_block_on_the_gpu():
    """The Triton kernel's own softplus(dt + dt_bias) against the step computed outside it, and a Mamba-2
    block with `compile` (torch.compile around the scan) against the eager block with the same weights:
    output and every gradient, fp32 on CUDA, norm-relative 1e-4 (the same TF32 scan in both; only the
    order of fp32 sums around it differs)."""
    import actors.trainer.models.neurofmx.mamba as mamba

    torch.manual_seed(0)
    g = torch.Generator(device="cuda").manual_seed(2)
    b, L, h, p, n = 4, 100, 8, 16, 16
    x, dt = torch.randn(b, L, h, p, device="cuda", generator=g), torch.randn(b, L, h, device="cuda", generator=g)
    bias, a = torch.randn(h, device="cuda", generator=g) - 3, -torch.rand(h, device="cuda", generator=g)
    B, C = torch.randn(b, L, n, device="cuda", generator=g), torch.randn(b, L, n, device="cuda", generator=g)
    fused = ssd_triton(x, dt, a, B, C, dt_bias=bias)
    outside = ssd_triton(x, torch.nn.functional.softplus(dt + bias), a, B, C)
    assert ((fused - outside).norm() / outside.norm()).item() < 1e-4
    for chunk in (16, 128):   # the config's chunk reaches the kernel; any chunk length is the same scan, its
        # TF32 products summed in another order (16 vs 64 differ by 3.4e-4 on the H100, 2026-12-05)
        other = ssd_triton(x, dt, a, B, C, chunk=chunk, dt_bias=bias)
        assert ((other - fused).norm() / fused.norm()).item() < 2e-3, chunk

    eager = Mamba2Block(128, d_state=16, expand=2, headdim=16, chunk=64, conv="conv1d").cuda()
    compiled = Mamba2Block(128, d_state=16, expand=2, headdim=16, chunk=64, conv="conv1d", compile=True).cuda()
    compiled.load_state_dict(eager.state_dict())
    u = torch.randn(6, 100, 128, device="cuda", generator=g)
    w = torch.randn(6, 100, 128, device="cuda", generator=g)
    ln = torch.nn.LayerNorm(128).cuda()
    for kw in ({}, {"pre_norm": ln, "residual": True}):   # the block; the residual layer with its norm inside
        results = []
        for m in (eager, compiled):
            m.zero_grad()
            uu = u.clone().requires_grad_(True)
            y = m(uu, **kw)
            (y * w).sum().backward()
            results.append([y.detach(), uu.grad] + [q.grad for q in m.parameters()])
        assert mamba._compiled_mamba2 is not None   # the compiled halves ran
        for got, want in zip(results[1], results[0], strict=True):
            assert ((got - want).norm() / want.norm()).item() < 1e-4


# -- Perceiver fusion -------------------------------------------------------------------------------

def test_perceiver_shapes_and_masked_keys_change_nothing():
    torch.manual_seed(0)
    fusion = PerceiverFusion(16, n_heads=4, n_self=2).eval()
    g = _g(4)
    lat = torch.randn(3, 6, 16, generator=g)
    s1, s2 = torch.randn(3, 10, 16, generator=g), torch.randn(3, 7, 16, generator=g)
    m1 = torch.rand(3, 10, generator=g) > 0.4
    m2 = torch.rand(3, 7, generator=g) > 0.4
    m2[2] = False
    m1[2] = False                                                  # sample 2: every key masked
    out_lat, (o1, o2) = fusion(lat, [s1, s2], [m1, m2])
    assert out_lat.shape == (3, 6, 16) and o1.shape == s1.shape and o2.shape == s2.shape
    assert torch.isfinite(out_lat).all()
    p1, p2 = s1.clone(), s2.clone()
    p1[~m1] = torch.randn(int((~m1).sum()), 16, generator=g) * 100
    p2[~m2] = float("nan")                                         # even NaN in a masked token
    q_lat, (q1, q2) = fusion(lat, [p1, p2], [m1, m2])
    assert torch.allclose(q_lat, out_lat, atol=1e-6)
    assert torch.allclose(q1[m1], o1[m1], atol=1e-6) and torch.allclose(q2[m2], o2[m2], atol=1e-6)
    bump = torch.randn(3, 10, 16, generator=g) * m1[..., None]
    r_lat, _ = fusion(lat, [s1 + bump, s2], [m1, m2])                 # a visible token does matter
    assert not torch.allclose(r_lat[:2], out_lat[:2], atol=1e-4)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="Inductor's CPU backend needs a C++ compiler")
def test_the_compiled_perceiver_fusion_equals_the_eager_one_in_float64():
    """`compile: true` runs each fusion block through one torch.compile'd function (Inductor's C++ backend
    here, its Triton kernels on CUDA): latents, streams and every gradient equal the eager block in float64,
    with masked keys (a sample with none visible) and two blocks sharing the compiled function."""
    import actors.trainer.models.neurofmx.perceiver as perceiver

    torch.manual_seed(0)
    blocks = [PerceiverFusion(16, n_heads=4, n_self=1, mlp_mult=2).double() for _ in range(2)]
    g = _g(12)
    lat = torch.randn(2, 5, 16, generator=g, dtype=torch.float64)
    s1, s2 = torch.randn(2, 9, 16, generator=g, dtype=torch.float64), torch.randn(2, 4, 16, generator=g, dtype=torch.float64)
    m1, m2 = torch.rand(2, 9, generator=g) > 0.3, torch.rand(2, 4, generator=g) > 0.3
    m1[1], m2[1] = False, False
    results = []
    for compiled in (False, True):
        leaves = [t.clone().requires_grad_(True) for t in (lat, s1, s2)]
        for b in blocks:
            b.zero_grad()
        y, (o1, o2) = blocks[0](leaves[0], leaves[1:], [m1, m2], compiled=compiled)
        y, (o1, o2) = blocks[1](y, [o1, o2], [m1, m2], compiled=compiled)
        (y.sin().sum() + o1.square().sum() + o2.sum()).backward()
        results.append([y.detach(), o1.detach(), o2.detach()] + [t.grad for t in leaves]
                       + [p.grad.clone() for b in blocks for p in b.parameters()])
    assert perceiver._compiled_fuse is not None
    for got, want in zip(results[1], results[0], strict=True):
        assert ((got - want).abs().max() / want.abs().max().clamp_min(1e-300)).item() < 1e-12


# -- the model --------------------------------------------------------------------------------------

CFG = {"d_model": 16, "n_layers": 2, "d_state": 4, "headdim": 8, "chunk": 8, "n_latents": 4, "n_heads": 2,
       "proj_dim": 8, "diffusion_steps": 10, "spikes": {"n_neurons": 6, "n_heldout": 2},
       "lfp": {"n_channels": 3, "rate_hz": 250.0, "patch": 5}, "eeg": {"n_channels": 2, "rate_hz": 200.0, "patch": 4},
       "curriculum": {"stage2_step": 10, "stage3_step": 20}, "forecast_fraction": 0.5}


def _batch(B=4, T=40, seed=0):
    g = _g(seed)
    return {"spikes": torch.poisson(torch.full((B, T, 6), 0.2), generator=g),
            "lfp": torch.randn(B, int(T * 2.5), 3, generator=g), "eeg": torch.randn(B, T * 2, 2, generator=g),
            "trial": torch.arange(100, 100 + B)}


def _model(**over) -> NeuroFMX:
    torch.manual_seed(0)
    cfg = {**CFG, **over}
    return build_model("neurofmx", cfg)


def test_neurofmx_is_registered_and_trains_in_every_stage():
    assert "neurofmx" in registered_models()
    m = _model()
    batch = _batch()
    keys = None
    for step, stage in ((0, 1), (10, 2), (25, 3)):
        out = m(batch, step)
        assert keys is None or set(out) == keys                         # one key set (ranks all-reduce them)
        keys = set(out)
        assert out["stage"] == stage and out["loss"].dim() == 0 and torch.isfinite(out["loss"])
        out["loss"].backward()
        # every parameter gets a gradient in every stage (zero for unused heads): DDP's precondition
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
        if stage == 1:
            assert all((p.grad == 0).all() for p in m.denoisers.parameters())
        m.zero_grad(set_to_none=True)
        if stage == 3:
            assert float(out["forecast"]) > 0 and float(out["diffusion"]) > 0 and float(out["contrastive"]) > 0
    assert len(m.fsdp_units()) == 4                                     # 2 Mamba layers + 2 fusion blocks


def test_plan_per_stage_and_seeded_per_sample():
    m = _model()
    data = m._inputs(_batch(B=8))
    ids = list(range(50, 58))
    p1 = m.plan(data, 0, ids)
    assert (p1.active.sum(1) == 1).all() and torch.equal(p1.active, p1.targets)
    p2 = m.plan(data, 10, ids)
    assert (p2.active.sum(1) == 2).all()
    p3 = m.plan(data, 30, ids)
    assert (p3.active.sum(1) >= 1).all() and p3.targets.all()
    for b in np.flatnonzero(p3.forecast.numpy()):   # forecasting: every token ending after the cutoff is hidden
        cut = int(p3.cutoff[b])
        assert p3.hidden["spikes"][b].tolist() == [t >= cut for t in range(40)]
        assert p3.hidden["lfp"][b].tolist() == [(i + 1) * 0.02 > cut * 0.01 + 1e-9 for i in range(20)]
    perm = [3, 1, 7, 0, 2, 6, 5, 4]                                    # the same samples in another order
    q3 = m.plan({k: v[perm] for k, v in data.items()}, 30, [ids[i] for i in perm])
    assert torch.equal(q3.active, p3.active[perm]) and torch.equal(q3.hidden["eeg"], p3.hidden["eeg"][perm])
    assert torch.equal(q3.cutoff, p3.cutoff[perm])


@pytest.mark.parametrize(("n_layers", "fusion_every", "blocks"), [(4, 1, 4), (4, 2, 2), (4, 4, 1), (1, 2, 1), (3, 2, 2)])
def test_fusion_frequency_and_prediction_shapes(n_layers, fusion_every, blocks):
    m = _model(n_layers=n_layers, fusion_every=fusion_every)
    assert len(m.fusions) == blocks                                   # every fusion_every layers and after the last
    out = m.predict(_batch(B=2))
    assert out["log_rates"].shape == (2, 40, 6) and out["features"].shape == (2, 40, 16)
    assert out["lfp"].shape == (2, 100, 3) and out["eeg"].shape == (2, 80, 2) and out["latents"].shape == (2, 4, 16)


@pytest.mark.parametrize(("tokenizer", "bidirectional", "aligned"),
                         [("binned", False, False), ("events", False, False), ("binned", True, False),
                          ("binned", True, True), ("events", False, True)])
def test_hidden_and_dropped_data_never_reach_the_outputs(tokenizer, bidirectional, aligned):
    m = _model(spikes={"n_neurons": 6, "n_heldout": 2, "tokenizer": tokenizer, "max_events": 64},
               bidirectional=bidirectional, fusion_aligned=aligned).eval()
    batch = _batch(B=3)
    data = m._inputs(batch)
    g = _g(9)
    hidden = {"spikes": torch.rand(3, 40, generator=g) < 0.3, "lfp": torch.rand(3, 20, generator=g) < 0.3,
              "eeg": torch.rand(3, 20, generator=g) < 0.3}
    active = torch.tensor([[True, True, True], [True, False, True], [False, True, True]])
    ref = m.decode(m.encode(data, active, hidden), data)
    p = {k: v.clone() for k, v in data.items()}
    p["spikes"][..., :4][hidden["spikes"]] += 3                       # spikes in hidden bins
    p["spikes"][..., 4:] += 5                                         # held-out neurons are never input
    p["lfp"][hidden["lfp"].repeat_interleave(5, dim=1)] += 7.0
    p["eeg"][hidden["eeg"].repeat_interleave(4, dim=1)] -= 7.0
    p["lfp"][1] = 50.0                                                # sample 1's LFP is dropped
    p["spikes"][2] += 2                                               # sample 2's spikes are dropped
    out = m.decode(m.encode(p, active, hidden), p)
    for k in ref:
        assert torch.allclose(out[k], ref[k], atol=1e-5), k
    i = int((~hidden["lfp"][0]).nonzero()[0])                         # a visible LFP token of sample 0
    p["lfp"][0, 5 * i:5 * i + 5] += torch.randn(5, 3, generator=g)
    assert not torch.allclose(m.decode(m.encode(p, active, hidden), p)["log_rates"], ref["log_rates"], atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_layer_batches_streams_exactly_and_reads_the_future_only_when_bidirectional(bidirectional):
    """Streams of one length share one mixer call (concatenated along the batch): equal to one call per
    stream. A causal layer's output before t ignores the input after t; a bidirectional one reads it."""
    m = _model(bidirectional=bidirectional).eval()
    assert len(m.fsdp_units()) == (6 if bidirectional else 4)
    g = _g(3)
    xs = {"spikes": torch.randn(2, 20, 16, generator=g), "lfp": torch.randn(2, 20, 16, generator=g),
          "eeg": torch.randn(2, 20, 16, generator=g), "events": torch.randn(2, 33, 16, generator=g)}
    groups = m._stack(xs)
    assert [names for names, _ in groups] == [["spikes", "lfp", "eeg"], ["events"]]
    with torch.no_grad():
        together = m._unstack([(names, m._mix(1, x)) for names, x in groups])
        for n, x in xs.items():
            torch.testing.assert_close(together[n], m._mix(1, x), rtol=1e-5, atol=1e-6)
        later = xs["spikes"].clone()
        later[:, 12:] += torch.randn(2, 8, 16, generator=g)
        past = (m._mix(1, later)[:, :12] - together["spikes"][:, :12]).abs().max()
    assert (past > 1e-3) if bidirectional else (past == 0)


def test_predict_hides_each_bin_from_its_own_rate():
    m = _model(mask_ratio=0.25).eval()
    batch = _batch(B=2)
    ref = m.predict(batch)                                            # 4 passes
    assert ref["log_rates"].shape == (2, 40, 6) and ref["features"].shape == (2, 40, 16)
    ens = m.predict(batch, samples=3)                                 # 3 partitions x 4 passes, averaged
    assert torch.allclose(ens["rates"], torch.exp(ens["log_rates"])) and not torch.allclose(ens["rates"], ref["rates"])
    for t in (0, 17, 39):
        bumped = {k: v.clone() for k, v in batch.items()}
        bumped["spikes"][:, t, :4] += 4
        out = m.predict(bumped)
        assert torch.allclose(out["log_rates"][:, t], ref["log_rates"][:, t], atol=1e-6)   # its own bin: no effect
        assert not torch.allclose(out["log_rates"], ref["log_rates"], atol=1e-6)           # the others see it
        assert torch.allclose(m.predict(bumped, samples=3)["rates"][:, t], ens["rates"][:, t], atol=1e-6)
    one = m.predict(batch, passes=1)
    bumped["spikes"][:, 39, :4] += 4
    assert not torch.allclose(m.predict(bumped, passes=1)["log_rates"][:, 39], one["log_rates"][:, 39])


@pytest.mark.parametrize(("lfp_patch", "aligned"), [(5, False), (10, False), (10, True)])   # LFP tokens of 20 / 40 ms
def test_features_of_every_stream_are_aligned_to_the_bins(lfp_patch, aligned):
    m = _model(lfp={"n_channels": 3, "rate_hz": 250.0, "patch": lfp_patch}, fusion_aligned=aligned).eval()
    batch = _batch(B=2)
    spikes = m.predict(batch, passes=1)["features"]
    every = m.predict(batch, passes=1, feature_streams="all")["features"]
    assert every.shape == (2, 40, 3 * 16) and torch.equal(every[..., :16], spikes)
    lfp, eeg = every[..., 16:32], every[..., 32:]
    per_lfp = lfp_patch * 4 // 10                                      # bins (10 ms) per LFP token (4 ms samples)
    for b in range(40):                                                # a bin reads the token holding its centre
        assert torch.equal(lfp[:, b], lfp[:, b - b % per_lfp]) and torch.equal(eeg[:, b], eeg[:, b - b % 2])
    assert not torch.equal(lfp[:, 0], lfp[:, per_lfp])                 # ... and the next token is another
    ref = m.predict(batch, feature_streams="all")["features"]          # masked inference: 4 passes
    for t in (0, 17, 39):                                              # a bin's own spikes reach no stream's features
        bumped = {k: v.clone() for k, v in batch.items()}
        bumped["spikes"][:, t, :4] += 4
        out = m.predict(bumped, feature_streams="all")["features"]
        assert torch.allclose(out[:, t], ref[:, t], atol=1e-6) and not torch.allclose(out, ref, atol=1e-6)
    with pytest.raises(InputError) as e:
        m.predict(batch, feature_streams="lfp")
    assert e.value.field == "feature_streams"


def test_the_aligned_exchange_adds_the_source_token_of_the_same_instant():
    """AlignedExchange against a hand-written loop. Spike tokens of 10 ms, LFP tokens of 40 ms, EEG of 20 ms:
    spike token i reads LFP token i // 4; LFP token j (centre 40 j + 20 ms) reads spike token 4 j + 2 and
    EEG token 2 j + 1; a hidden source token adds nothing."""
    m = _model(lfp={"n_channels": 3, "rate_hz": 250.0, "patch": 10}, fusion_aligned=True).eval()
    data = m._inputs(_batch(B=2))
    hidden = {"spikes": torch.zeros(2, 40, dtype=torch.bool), "lfp": torch.zeros(2, 10, dtype=torch.bool)}
    hidden["spikes"][0, 6] = True
    hidden["lfp"][1, 3] = True
    enc = m.encode(data, torch.ones(2, 3, dtype=torch.bool), hidden)
    align = m._alignment(enc.tokens, enc.keys)
    idx, w = align[("spikes", "lfp")]
    assert idx.tolist() == [[i // 4 for i in range(40)]] * 2
    assert w[1].tolist() == [i // 4 != 3 for i in range(40)] and bool(w[0].all())
    idx, w = align[("lfp", "spikes")]
    assert idx.tolist() == [[4 * j + 2 for j in range(10)]] * 2
    assert w[0].tolist() == [j != 1 for j in range(10)] and bool(w[1].all())
    assert align[("lfp", "eeg")][0][0].tolist() == [2 * j + 1 for j in range(10)]
    assert sorted(align) == sorted((t, s) for t in m.modalities for s in m.modalities if s != t)
    g = _g(4)
    xs = {s: torch.randn(2, n, 16, generator=g) for s, n in (("spikes", 40), ("lfp", 10), ("eeg", 20))}
    ex = m.aligned[0]
    with torch.no_grad():
        out = ex(xs, align)
        msg = {s: ex.proj[s](ex.norm[s](x)) for s, x in xs.items()}
        for tgt, x in xs.items():
            want = x.clone()
            for (t, src), (i, wt) in align.items():
                if t == tgt:
                    for b in range(2):
                        for k in range(x.shape[1]):
                            if wt[b, k]:
                                want[b, k] += msg[src][b, i[b, k]]
            torch.testing.assert_close(out[tgt], want, rtol=1e-6, atol=1e-6)


def test_predict_with_a_modality_list_and_the_100m_config_size():
    m = _model()
    both = m.predict(_batch(B=2), active=["spikes", "lfp"])
    alone = m.predict(_batch(B=2), active=["spikes"])
    assert not torch.allclose(both["log_rates"], alone["log_rates"])
    with pytest.raises(InputError) as e:
        m.predict(_batch(B=2), active=["ecog"])
    assert e.value.field == "active"
    from pathlib import Path

    from actors.common.config import load_yaml

    path = Path(__file__).resolve().parents[2] / "configs" / "train" / "neurofmx_100m.yaml"
    cfg = load_yaml(path.read_text())["model"]["cfg"]
    with torch.device("meta"):
        big = build_model("neurofmx", cfg)
    n = sum(p.numel() for p in big.parameters())
    assert 90e6 <= n <= 120e6, n


def test_bad_config_and_batch_name_the_field():
    with pytest.raises(InputError) as e:
        build_model("neurofmx", {**CFG, "n_heads": 3})
    assert e.value.field == "model.cfg.n_heads"
    with pytest.raises(InputError) as e:
        build_model("neurofmx", {**CFG, "fusion_every": 3})
    assert e.value.field == "model.cfg.fusion_every"
    with pytest.raises(InputError) as e:
        build_model("neurofmx", {**CFG, "spikes": {"n_neurons": 4, "n_heldout": 4}})
    assert e.value.field == "model.cfg.spikes.n_heldout"
    with pytest.raises(InputError) as e:
        build_model("neurofmx", {**CFG, "warp": 1})
    assert e.value.field == "model.cfg.warp"
    m = _model()
    bad = _batch()
    bad["lfp"] = bad["lfp"][:, :90]
    with pytest.raises(InputError) as e:
        m(bad, 0)
    assert e.value.field == "batch.lfp"
    del bad["eeg"]
    with pytest.raises(InputError) as e:
        m(bad, 0)
    assert e.value.field == "batch.eeg"


def test_neurofmx_under_fsdp2_and_activation_checkpointing_equals_ddp(tmp_path):
    """One rank (gloo): the trainer's FSDP2 wrapping of the Mamba and fusion blocks (each block runs once
    per stream in a forward) and its activation checkpointing give ddp's loss after 3 updates."""
    import warnings

    from actors.common.config import load_yaml
    from actors.neuro import NeuroDataSpec, write_dataset
    from actors.trainer.config import TrainSpec
    from actors.trainer.engine import train
    from configs import preset

    spec = NeuroDataSpec.model_validate(load_yaml(preset("neuro", "lorenz_ci.yaml").read_text()))
    write_dataset(spec, tmp_path / "data", preview=False)
    cfg = {**CFG, "spikes": {"n_neurons": 12, "n_heldout": 3}, "lfp": {"n_channels": 4, "rate_hz": 250.0, "patch": 5},
           "eeg": {"n_channels": 3, "rate_hz": 200.0, "patch": 4}, "curriculum": {"stage2_step": 1, "stage3_step": 2}}
    import torch.distributed as dist

    had_group = dist.is_initialized()
    losses = {}
    for strategy, ac in (("ddp", False), ("fsdp2", False), ("fsdp2", True)):
        ts = TrainSpec.model_validate({"model": {"name": "neurofmx", "cfg": cfg}, "steps": 3, "batch_size": 8,
                                       "strategy": strategy, "activation_checkpointing": ac, "precision": "fp32",
                                       "checkpoint": {"every": 3}, "log_every": 1})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # FSDP2 notes that Linear outputs are views
            out = train(ts, tmp_path / "data" / "train", tmp_path / f"{strategy}-{ac}", device="cpu", log=None)
        losses[(strategy, ac)] = out["final"]["loss"]
    if not had_group and dist.is_initialized():   # the engine made a one-rank group for fsdp2: not ours to keep
        dist.destroy_process_group()
    assert losses[("fsdp2", False)] == pytest.approx(losses[("ddp", False)], rel=1e-5)
    assert losses[("fsdp2", True)] == pytest.approx(losses[("ddp", False)], rel=1e-5)
