"""jobs.bench.trainer on the CPU: its rows and the FLOPs behind each row's MFU."""
from __future__ import annotations

import json

import pytest


def test_a_variant_of_another_batch_gets_its_own_flops_and_mfu(tmp_path):
    """The MLP's FLOPs per step are linear in the batch (matmuls only), so the batch-128 variant's count is
    exactly twice the batch-64 one's (until 2026-12-05 every variant reused the first spec's count, which
    understated MFU of a larger batch by the batch ratio); each row's MFU is its FLOPs / (step time x peak)."""
    from jobs.bench import trainer as bench

    out = tmp_path / "b"
    assert bench.main(["--out", str(out), "--strategies", "ddp", "--world-sizes", "1", "--steps", "4", "--warmup", "1",
                       "--samples", "512", "--set", "model.cfg.hidden=[64]", "model.cfg.d_in=32", "model.cfg.d_out=8",
                       "--variant", "b64:batch_size=64", "--variant", "b128:batch_size=128"]) == 0
    doc = json.loads((out / "trainer_bench.json").read_text())
    rows = {r["variant"]: r for r in doc["rows"]}
    assert set(rows) == {"b64", "b128"} and not any("error" in r for r in rows.values())
    assert rows["b64"]["flops_per_step"] == pytest.approx(doc["flops_per_step"], rel=1e-12)
    assert rows["b128"]["flops_per_step"] == pytest.approx(2 * rows["b64"]["flops_per_step"], rel=1e-12)
    for r in rows.values():
        assert r["batch_size"] in (64, 128)
        assert r["mfu"] == pytest.approx(r["flops_per_step"] / r["time_step"] / doc["peak_flops_per_rank"], rel=1e-12)
    assert "| b128 | ddp | 1 |" in (out / "trainer_bench.md").read_text()


def test_a_depthwise_conv_backward_costs_what_its_forward_does():
    """The counter's convolution backward (`conv_backward_flops`): a depthwise Conv1d's forward + input and
    weight gradients = 3 x 2 B L_out K C multiply-adds (torch's own formula counts the weight gradient as a
    dense conv, C times too many); a dense conv is unchanged from torch's count."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from jobs.bench.trainer import conv_backward_flops

    B, C, L, K = 2, 48, 30, 4

    def count(groups: int, custom: bool) -> int:
        x = torch.randn(B, C, L, requires_grad=True)
        w = torch.randn(C, C // groups, K, requires_grad=True)
        mapping = {torch.ops.aten.convolution_backward: conv_backward_flops} if custom else None
        counter = FlopCounterMode(display=False, custom_mapping=mapping)
        with counter:
            torch.nn.functional.conv1d(x, w, padding=K - 1, groups=groups).sum().backward()
        return counter.get_total_flops()

    L_out = L + K - 1
    assert count(C, True) == 3 * 2 * B * L_out * K * C
    assert count(C, False) > 10 * count(C, True)          # what torch alone reports
    assert count(1, True) == count(1, False) == 3 * 2 * B * L_out * K * C * C
