"""The trainer engine on one process (no Ray): shards, registry, the loop against a float64 numpy AdamW
and the least-squares solution, exact resume (RNG streams included), atomic checkpoints, bad input."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch

from actors.common.errors import InputError, UnknownName
from actors.trainer import ShardDataset, build_model, register_model, registered_models, write_shards
from actors.trainer import checkpoint as ck
from actors.trainer.config import TrainSpec
from actors.trainer.engine import lr_at, read_events, read_metrics, seed_everything, train


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _regression(n=96, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(d, 1))
    y = (x @ w + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    return x, y


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    x, y = _regression()
    d = tmp_path_factory.mktemp("shards") / "data"
    write_shards(({"x": x[i], "y": y[i]} for i in range(len(x))), d, shard_size=40, meta={"kind": "test"})
    return d, x, y


def _spec(**kw):
    base = {"model": {"name": "mlp_regression", "cfg": {"d_in": 6, "hidden": [8]}}, "steps": 20, "batch_size": 16,
            "checkpoint": {"every": 6, "keep": 2}, "log_every": 1}
    base.update(kw)
    return TrainSpec.model_validate(base)


def _losses(run_dir):
    return np.array([r["loss"] for r in read_metrics(run_dir)])


# ---- shards -------------------------------------------------------------------------------------------
def test_shards_roundtrip_order_and_rank_slices(data):
    d, x, y = data
    ds = ShardDataset(d)
    assert ds.num_samples == 96 and ds.shards == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert ds.fields == {"x": {"shape": [6], "dtype": "float32"}, "y": {"shape": [1], "dtype": "float32"}}
    assert ds.meta == {"kind": "test"}
    np.testing.assert_array_equal(ds.load_all()["x"], x)
    # an epoch visits every sample once; the order is a function of (seed, epoch) only
    order = ds.order(3, seed=5)
    assert sorted(order) == ds.order(0, shuffle=False) and order == ShardDataset(d).order(3, seed=5)
    assert order != ds.order(4, seed=5)
    # 2 ranks of batch 8 see exactly the samples one process of batch 16 sees, in the same order
    one = list(ds.batches(0, 1, 16, epoch=2, seed=1))
    r0, r1 = (list(ds.batches(r, 2, 8, epoch=2, seed=1)) for r in (0, 1))
    assert len(one) == ds.batches_per_epoch(1, 16) == 6
    for b, a0, a1 in zip(one, r0, r1):
        np.testing.assert_array_equal(b["x"], np.concatenate([a0["x"], a1["x"]]))
    # resuming at cursor c yields batches c, c+1, ... of the same epoch
    tail = list(ds.batches(1, 2, 8, epoch=2, cursor=4, seed=1))
    assert len(tail) == 2 and all(np.array_equal(a["x"], b["x"]) for a, b in zip(tail, r1[4:]))


def test_shard_errors_name_the_file(tmp_path, data):
    d, x, y = data
    with pytest.raises(InputError, match="already holds a shard dataset"):
        write_shards([{"x": x[0]}], d)
    with pytest.raises(InputError, match="sample 1 field 'x' holds NaN"):
        write_shards([{"x": x[0]}, {"x": np.full(6, np.nan, np.float32)}], tmp_path / "nan")
    with pytest.raises(InputError, match=r"sample 1 field 'x' is float32\[5\], the dataset has float32\[6\]"):
        write_shards([{"x": x[0]}, {"x": x[1, :5]}], tmp_path / "shape")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="index.json is missing") as e:
        ShardDataset(tmp_path / "empty")
    assert e.value.field == "data"
    # a shard deleted after writing
    bad = tmp_path / "missing"
    write_shards(({"x": x[i]} for i in range(10)), bad, shard_size=4)
    (bad / "shard-000001.tar").unlink()
    with pytest.raises(InputError, match=r"missing/shard-000001.tar is missing \(1 of 3 shards"):
        ShardDataset(bad)
    # a shard whose member has another shape than the index, and one holding NaN
    for name, arr, msg in (("shape2", np.zeros(5, np.float32), r"shard-000000.tar: 000000001.x.npy is float32\[5\]"),
                           ("nan2", np.full(6, np.nan, np.float32), "shard-000000.tar: 000000001.x.npy holds NaN")):
        p = tmp_path / name
        write_shards(({"x": x[i]} for i in range(4)), p)
        _replace_member(p / "shard-000000.tar", "000000001.x.npy", arr)
        with pytest.raises(InputError, match=msg):
            ShardDataset(p).load_all()
    with pytest.raises(InputError, match="batch_size"):
        next(ShardDataset(d).batches(0, 1, 97, epoch=0))


def _replace_member(tar_path, name, arr):
    with tarfile.open(tar_path) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    buf = io.BytesIO()
    np.save(buf, arr)
    with tarfile.open(tar_path, "w") as t:
        for m, blob in members:
            blob = buf.getvalue() if m.name == name else blob
            m.size = len(blob)
            t.addfile(m, io.BytesIO(blob))


# ---- registry -----------------------------------------------------------------------------------------
def test_registry():
    assert {"mlp_regression", "gru_regression"} <= set(registered_models())
    with pytest.raises(UnknownName) as e:
        build_model("no_such_model", {})
    assert e.value.field == "model.name" and "mlp_regression" in e.value.allowed

    @register_model("test_engine_tiny")
    def make(cfg):
        return torch.nn.Linear(cfg["n"], 1)

    assert isinstance(build_model("test_engine_tiny", {"n": 3}), torch.nn.Linear)
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp_regression")(lambda cfg: None)


# ---- the loop against independent references ------------------------------------------------------------
def _adamw_reference(spec, ds, w0):
    """Float64 numpy AdamW (torch's update rule, global-norm clipping) on the engine's batch order."""
    o = spec.optimizer
    w, m, v = w0.astype(np.float64), np.zeros_like(w0, np.float64), np.zeros_like(w0, np.float64)
    per_epoch = ds.batches_per_epoch(1, spec.batch_size)
    losses = []
    for t in range(spec.steps):
        epoch, cursor = divmod(t, per_epoch)
        b = next(ds.batches(0, 1, spec.batch_size, epoch, cursor, seed=spec.seed, shuffle=spec.shuffle))
        x, y = b["x"].astype(np.float64), b["y"].astype(np.float64)
        r = x @ w.T - y
        losses.append(np.mean(r ** 2))
        g = 2 * r.T @ x / r.size
        norm = np.sqrt(np.sum(g ** 2))
        if o.grad_clip:
            g = g * min(1.0, o.grad_clip / (norm + 1e-6))
        lr = lr_at(spec, t)
        w = w * (1 - lr * o.weight_decay)
        m = o.betas[0] * m + (1 - o.betas[0]) * g
        v = o.betas[1] * v + (1 - o.betas[1]) * g * g
        mh, vh = m / (1 - o.betas[0] ** (t + 1)), v / (1 - o.betas[1] ** (t + 1))
        w = w - lr * mh / (np.sqrt(vh) + o.eps)
    return np.array(losses), w


def test_loop_matches_float64_adamw_and_reaches_least_squares(data, tmp_path):
    d, x, y = data
    spec = _spec(model={"name": "mlp_regression", "cfg": {"d_in": 6, "hidden": [], "bias": False}}, steps=200,
                 batch_size=32, optimizer={"lr": 0.05, "weight_decay": 0.01, "grad_clip": 0.5},
                 scheduler={"warmup_steps": 10}, checkpoint={"every": 200}, log_every=1)
    summary = train(spec, d, tmp_path / "run", log=None)
    seed_everything(spec.seed)
    w0 = build_model(spec.model.name, spec.model.cfg).blocks[0].weight.detach().numpy()
    ref_losses, ref_w = _adamw_reference(spec, ShardDataset(d), w0)
    np.testing.assert_allclose(_losses(tmp_path / "run"), ref_losses, rtol=2e-5, atol=1e-7)
    assert summary["steps"] == 200 and len(summary["checkpoints"]) == 1
    w = torch.load(tmp_path / "run" / "checkpoints" / "ckpt-000000200" / "model.pt")["blocks.0.weight"].numpy()
    np.testing.assert_allclose(w, ref_w, rtol=1e-4, atol=1e-5)
    # the closed form: AdamW with weight decay 0.01 and a cosine schedule ends near the lstsq solution
    lstsq = np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)[0].T
    np.testing.assert_allclose(w, lstsq, atol=0.05)


def test_schedule():
    spec = _spec(steps=110, optimizer={"lr": 1.0}, scheduler={"warmup_steps": 10, "min_lr_ratio": 0.1})
    assert lr_at(spec, 0) == pytest.approx(0.1) and lr_at(spec, 9) == pytest.approx(1.0)
    assert lr_at(spec, 10) == pytest.approx(1.0) and lr_at(spec, 60) == pytest.approx(0.55)
    assert lr_at(spec, 110) == pytest.approx(0.1)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_resume_is_exact_with_dropout(data, tmp_path, strategy):
    """Stop after step 9, resume from the checkpoint at 6 (RNG streams and cursor restored): the loss
    curve of steps 7..20 equals the uninterrupted run's bit for bit, dropout draws included."""
    d = data[0]
    spec = _spec(strategy=strategy, model={"name": "mlp_regression", "cfg": {"d_in": 6, "hidden": [8], "dropout": 0.3}})
    train(spec, d, tmp_path / "full", log=None)
    partial = train(spec, d, tmp_path / "part", until_step=9, log=None)
    assert [p.rsplit("-", 1)[1] for p in partial["checkpoints"]] == ["000000006", "000000009"]
    resumed = train(spec, d, tmp_path / "part", resume_from=tmp_path / "part" / "checkpoints" / "ckpt-000000006", log=None)
    assert resumed["resumed_from"].endswith("ckpt-000000006") and resumed["steps"] == 20
    np.testing.assert_array_equal(_losses(tmp_path / "part"), _losses(tmp_path / "full"))
    assert [e["step"] for e in read_events(tmp_path / "part")] == [0, 6]
    # retention: the newest 2 of 6, 12, 18, 20
    assert [s for s, _ in ck.list_checkpoints(tmp_path / "full" / "checkpoints")] == [18, 20]
    # with vs without activation checkpointing: the same curve (recomputation replays the dropout draws)
    train(spec.model_copy(update={"activation_checkpointing": True}), d, tmp_path / "ac", log=None)
    np.testing.assert_allclose(_losses(tmp_path / "ac"), _losses(tmp_path / "full"), rtol=1e-6)


# ---- checkpoints: atomic, checked ---------------------------------------------------------------------------
def test_crash_mid_checkpoint_leaves_no_loadable_checkpoint(data, tmp_path, monkeypatch):
    d = data[0]
    spec = _spec(steps=12)
    real_save = torch.save

    def save(obj, f, *a, **k):
        if str(f).endswith("optim.pt") and "ckpt-000000012" in str(f):
            real_save(obj, f, *a, **k)
            with open(f, "r+b") as fh:    # half written, then the process "dies"
                fh.truncate(fh.seek(0, 2) // 2)
            raise KeyboardInterrupt("killed mid-write")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(KeyboardInterrupt):
        train(spec, d, tmp_path / "run", log=None)
    root = tmp_path / "run" / "checkpoints"
    assert (root / ".tmp-ckpt-000000012").is_dir()
    assert [s for s, _ in ck.list_checkpoints(root)] == [6] and ck.latest_checkpoint(root).name == "ckpt-000000006"
    with pytest.raises(InputError, match="not a complete checkpoint"):
        ck.read_meta(root / ".tmp-ckpt-000000012")
    monkeypatch.setattr(torch, "save", real_save)
    out = train(spec, d, tmp_path / "run", resume_from=ck.latest_checkpoint(root), log=None)   # clears the .tmp
    assert out["steps"] == 12 and not (root / ".tmp-ckpt-000000012").exists()
    # a file changed behind the manifest's back is refused
    with open(root / "ckpt-000000012" / "model.pt", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(InputError, match="corrupt: model.pt has"):
        ck.read_meta(root / "ckpt-000000012")


def test_checkpoint_of_another_model_data_or_order_is_refused(data, tmp_path):
    d, x, y = data
    spec = _spec(steps=6)
    ckpt = train(spec, d, tmp_path / "a", log=None)["latest_checkpoint"]
    cases = [
        (_spec(model={"name": "gru_regression", "cfg": {}}), d, "resume", "holds model 'mlp_regression'"),
        (_spec(model={"name": "mlp_regression", "cfg": {"d_in": 6, "hidden": [9]}}), d, "resume", "holds model"),
        (_spec(batch_size=8), d, "batch_size", "the data order would change"),
        (_spec(strategy="deepspeed_zero3"), d, "strategy", "cannot load"),
    ]
    other = tmp_path / "other"
    write_shards(({"x": x[i], "y": y[i]} for i in range(50)), other)
    cases.append((spec, other, "data", "trained on another data set"))
    for s, dd, field, msg in cases:
        with pytest.raises(InputError, match=msg) as e:
            train(s, dd, tmp_path / "b", resume_from=ckpt, log=None)
        assert e.value.field == field


def test_bad_config_and_model_output(data, tmp_path):
    d = data[0]
    from actors.common.config import validated

    bad = [({"strategy": "zero2"}, "strategy"), ({"batch_size": 15, "workers": {"num_workers": 2}}, "batch_size"),
           ({"scheduler": {"warmup_steps": 50}}, "scheduler.warmup_steps"), ({"optimizer": {"lr": 0}}, "optimizer.lr"),
           ({"inject_failure": {"step": 99}}, "inject_failure.step"), ({"checkpoint": {"evry": 3}}, "checkpoint.evry")]
    base = {"model": {"name": "mlp_regression"}, "steps": 20, "batch_size": 16}
    for override, field in bad:
        with pytest.raises(InputError) as e:
            validated(TrainSpec, {**base, **override})
        assert e.value.field == field, (override, e.value)
    with pytest.raises(InputError, match="bf16 mixed precision needs a CUDA device") as e:
        train(_spec(precision="bf16"), d, tmp_path / "r", device="cpu", log=None)
    with pytest.raises(UnknownName):
        train(_spec(model={"name": "nope"}), d, tmp_path / "r2", log=None)

    @register_model("test_engine_no_loss")
    def make(cfg):
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(6, 1)

            def forward(self, batch, step):
                return {"mse": self.lin(batch["x"]).mean()}
        return M()

    with pytest.raises(InputError, match="not a dict with key 'loss'") as e:
        train(_spec(model={"name": "test_engine_no_loss"}), d, tmp_path / "r3", log=None)
    assert e.value.field == "model.name"
    with pytest.raises(InputError, match="no fsdp_units"):
        train(_spec(model={"name": "test_engine_no_loss"}, activation_checkpointing=True), d, tmp_path / "r4", log=None)
    with pytest.raises(InputError, match="no such directory"):
        train(_spec(), tmp_path / "nowhere", tmp_path / "r5", log=None)


class _TimeGridNet(torch.nn.Module):
    """A model that makes a float32 tensor inside forward (a time grid), like NeuroFMX's time encodings."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.time, self.out = torch.nn.Linear(6, 8), torch.nn.Linear(1, 8), torch.nn.Linear(8, 1)

    def fsdp_units(self):   # self.time stays in the root: its input is made inside the root's forward
        return [self.inp]

    def forward(self, batch, step):
        t = torch.linspace(0.0, 1.0, batch["x"].shape[0])[:, None]
        pred = self.out(torch.tanh(self.inp(batch["x"]) + self.time(t)))
        return {"loss": (pred - batch["y"]).pow(2).mean()}


@pytest.mark.parametrize("strategy", ["fsdp2", "deepspeed_zero3"])
def test_fsdp2_and_zero3_bf16_compute_under_autocast(data, strategy):
    """FSDP2's bf16 policy casts only the forward inputs, and DeepSpeed's own bf16 mode holds bf16 weights:
    a tensor made inside forward met bf16 weights on the H200 ("mat1 and mat2 must have the same dtype")
    under both; both now compute under autocast. bf16 is refused on the CPU by resolve_precision,
    so the strategy is built directly with bf16=True (CPU autocast has bf16); the loss is the fp32 one
    within bf16 rounding and every parameter gets a finite gradient."""
    from actors.trainer.strategies import make_strategy

    _, x, y = data
    batch = {"x": torch.from_numpy(x[:16]), "y": torch.from_numpy(y[:16])}
    ref = _TimeGridNet()(batch, 0)["loss"].item()
    if strategy == "deepspeed_zero3":
        pytest.importorskip("deepspeed")
    st = make_strategy(_TimeGridNet(), _spec(strategy=strategy), torch.device("cpu"), 0, 1, bf16=True)
    loss = st.forward(batch, 0)["loss"]
    st.backward(loss)
    assert abs(loss.item() - ref) <= 2e-2 * abs(ref)
    if strategy == "deepspeed_zero3":   # ZeRO-3 keeps gradients in its partitions, not in .grad
        from deepspeed.utils import safe_get_full_grad

        grads = [safe_get_full_grad(p) for p in st.raw.parameters()]
    else:
        grads = [p.grad for p in st.model.parameters()]
    assert all(g is not None and torch.isfinite(g.full_tensor() if hasattr(g, "full_tensor") else g).all() for g in grads)


@pytest.mark.gpu
def test_fsdp2_and_ddp_train_in_bf16_on_the_gpu_and_track_the_fp32_run(data, tmp_path):
    """bf16 on CUDA (FSDP2's MixedPrecisionPolicy + autocast, DDP's autocast): 200 steps of the
    least-squares model follow the fp32 run's loss curve within bf16 rounding and reach the same
    plateau; the first step's loss equals the fp32 one to bf16 precision."""
    d = data[0]
    base = {"model": {"name": "mlp_regression", "cfg": {"d_in": 6, "hidden": [32]}}, "steps": 200,
            "batch_size": 32, "optimizer": {"lr": 0.01}, "checkpoint": {"every": 200}}
    train(_spec(**base, precision="fp32"), d, tmp_path / "fp32", log=None)
    ref = _losses(tmp_path / "fp32")
    for strategy in ("fsdp2", "ddp"):
        train(_spec(**base, strategy=strategy, precision="bf16"), d, tmp_path / strategy, log=None)
        got = _losses(tmp_path / strategy)
        assert got[0] == pytest.approx(ref[0], rel=2e-2)
        assert np.isfinite(got).all() and got[-20:].mean() < 0.2 * got[0]
        assert got[-20:].mean() == pytest.approx(ref[-20:].mean(), rel=0.25)
