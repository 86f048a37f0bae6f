"""The three ways the engine runs a model: `ddp` (DistributedDataParallel; a plain module on one
process), `fsdp2` (torch.distributed.fsdp.fully_shard per `model.fsdp_units()` and the root) and
`deepspeed_zero3` (a DeepSpeed engine with ZeRO stage 3 and DeepSpeed's AdamW, `torch_adam`).

Each strategy exposes the same steps — forward(batch, step), backward(loss), step(lr) (clip, update,
zero grads; returns the global grad norm), save(tmp_dir, rank), load(ckpt_dir) — so the training loop
in engine.py is one loop. Learning rates are set by the loop before every update (the schedule is a
pure function of the global step), so resuming, or PBT changing `lr`, needs no scheduler state.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from actors.common.errors import InputError
from actors.trainer.config import TrainSpec

__all__ = ["Strategy", "apply_activation_checkpointing", "ensure_process_group", "make_strategy"]


def ensure_process_group(device: torch.device) -> bool:
    """A one-rank process group when none exists (fsdp2 / ZeRO-3 on a single process); True if created."""
    if dist.is_available() and dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return True


def _units(model: nn.Module) -> list[nn.Module]:
    units = model.fsdp_units() if hasattr(model, "fsdp_units") else []
    return [u for u in units if u is not model]


def apply_activation_checkpointing(model: nn.Module, units: list[nn.Module]) -> list[nn.Module]:
    """Replace each unit in its parent by torch's checkpoint_wrapper (non-reentrant, RNG state preserved:
    its activations are recomputed in backward) and return the wrappers, the units FSDP2 then shards.
    State-dict keys do not change (the wrapper strips its prefix). No units: an InputError."""
    if not units:
        raise InputError("activation_checkpointing", f"model {type(model).__name__} has no fsdp_units() to checkpoint",
                         "false, or a model with fsdp_units()")
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    where = {id(child): (parent, name) for parent in model.modules() for name, child in parent.named_children()}
    wrapped = []
    for unit in units:
        if id(unit) not in where:
            raise InputError("activation_checkpointing", f"an fsdp_units() entry of {type(model).__name__} is not a "
                             "submodule of it", "fsdp_units() returning submodules")
        parent, name = where[id(unit)]
        w = checkpoint_wrapper(unit, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
        parent.register_module(name, w)   # also replaces the entry of an nn.ModuleList / nn.Sequential
        wrapped.append(w)
    return wrapped


def _adamw(params: Any, spec: TrainSpec, device: torch.device) -> torch.optim.Optimizer:
    """AdamW: torch's fused CUDA kernel on a GPU (one launch for all parameters; the per-parameter loop
    was 38-53 ms of a 100M step on the H200), the per-parameter loop on the CPU."""
    o = spec.optimizer
    impl = {"fused": True} if device.type == "cuda" else {"foreach": False}
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay, **impl)


class Strategy:
    """Base: a model, its optimizer and the distributed layout."""

    name = "base"

    def __init__(self, model: nn.Module, units: list[nn.Module], spec: TrainSpec, device: torch.device, rank: int,
                 world_size: int, bf16: bool):
        self.spec, self.device, self.rank, self.world_size, self.bf16 = spec, device, rank, world_size, bf16
        self.raw = model
        self.units = units

    # -- the step ---------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 compute under torch.autocast (DDP, FSDP2; DeepSpeed opens it inside its engine): tensors made
        inside the model are fp32, and autocast casts both sides of each matmul."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        with self.autocast():
            return self.model(batch, step)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def step(self, lr: float) -> float:
        self.set_lr(lr)
        clip = self.spec.optimizer.grad_clip
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip else float("inf"))
        if hasattr(norm, "full_tensor"):   # a DTensor under fsdp2
            norm = norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.raw.parameters())

    # -- checkpoints (full, FQN-keyed state dicts: ddp and fsdp2 read each other's) ------------------
    def save(self, tmp: Path, rank: int) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd = get_model_state_dict(self.model, options=opts)          # a collective under fsdp2
        osd = get_optimizer_state_dict(self.model, self.optimizer, options=opts)
        if rank == 0:
            torch.save(msd, tmp / "model.pt")
            torch.save(osd, tmp / "optim.pt")

    def load(self, path: Path) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        msd = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
        osd = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
        set_model_state_dict(self.model, msd, options=StateDictOptions(full_state_dict=True))
        # parameters that have had no gradient yet (e.g. a head a curriculum stage has not used) have no
        # AdamW state in the checkpoint, exactly as in the uninterrupted run: load the rest, not strictly
        set_optimizer_state_dict(self.model, self.optimizer, osd,
                                 options=StateDictOptions(full_state_dict=True, strict=False))

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The unsharded weights (on every rank; for evaluation after training)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True))


class DDPStrategy(Strategy):
    name = "ddp"

    def __init__(self, model: nn.Module, *args: Any):
        super().__init__(model, *args)
        model.to(self.device)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(model, device_ids=ids)
        else:
            self.model = model
        self.optimizer = _adamw(self.model.parameters(), self.spec, self.device)


class FSDP2Strategy(Strategy):
    name = "fsdp2"

    def __init__(self, model: nn.Module, *args: Any):
        super().__init__(model, *args)
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        ensure_process_group(self.device)
        model.to(self.device)
        # bf16: parameters gathered in bf16, gradients reduced in fp32, and compute under autocast as DDP does:
        # the policy alone casts only the forward *inputs*, so tensors the model makes inside (time grids,
        # masks, embeddings) stay fp32 and meet bf16 weights ("mat1 and mat2 must have the same dtype")
        mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False)
              if self.bf16 else MixedPrecisionPolicy())
        for unit in self.units:
            fully_shard(unit, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        self.model = model
        self.optimizer = _adamw(model.parameters(), self.spec, self.device)


class ZeRO3Strategy(Strategy):
    name = "deepspeed_zero3"

    def __init__(self, model: nn.Module, *args: Any):
        super().__init__(model, *args)
        try:
            import deepspeed
        except ImportError as exc:
            raise InputError("strategy", f"deepspeed_zero3 needs DeepSpeed, which does not import here ({exc})",
                             "ddp or fsdp2, or `make venv` (DS_BUILD_OPS=0 pip install --no-build-isolation "
                             "deepspeed)") from None
        ensure_process_group(self.device)
        # DeepSpeed reads the launcher's variables; Ray Train sets them, a single process may not have
        os.environ.setdefault("LOCAL_RANK", str(self.device.index or 0))
        os.environ.setdefault("RANK", str(self.rank))
        os.environ.setdefault("WORLD_SIZE", str(self.world_size))
        if self.device.type == "cpu":
            # DeepSpeed's CPU accelerator JIT-compiles a shared-memory all-reduce used only by inference
            # (inference_all_reduce); training collectives go through torch.distributed (gloo) without it.
            import importlib

            # (`import deepspeed.comm.torch as m` would bind the torch package deepspeed.comm imports)
            importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
        o = self.spec.optimizer
        config = {
            "train_batch_size": self.spec.batch_size,
            "train_micro_batch_size_per_gpu": self.spec.batch_size // self.world_size,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": float(o.grad_clip or 0.0),
            "zero_optimization": {"stage": 3},
            "optimizer": {"type": "AdamW", "params": {"lr": o.lr, "betas": list(o.betas), "eps": o.eps,
                                                      "weight_decay": o.weight_decay, "torch_adam": True}},
            # bf16 as torch autocast inside DeepSpeed's engine (fp32 weights, bf16 compute, as under DDP / FSDP2):
            # its own `bf16` mode holds bf16 weights that met fp32 tensors made inside the model on the H200
            # ("mat1 and mat2 ... same dtype"), and it switches off an autocast opened outside the engine
            "bf16": {"enabled": False},
            "torch_autocast": {"enabled": bool(self.bf16), "dtype": "bfloat16"},
            "fp16": {"enabled": False},
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }
        model.to(self.device)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=model.parameters(), config=config, dist_init_required=False)
        self.model = self.engine

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        return self.engine(batch, step)   # the engine opens autocast itself (`torch_autocast` above)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self, lr: float) -> float:
        self.set_lr(lr)
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def num_parameters(self) -> int:
        return sum(getattr(p, "ds_numel", p.numel()) for p in self.raw.parameters())

    def save(self, tmp: Path, rank: int) -> None:
        """DeepSpeed's own per-rank shards (what a resume loads) and, gathered on every rank, the full
        weights as model.pt on rank 0 (what evaluation reads, as from a ddp / fsdp2 checkpoint)."""
        self.engine.save_checkpoint(str(tmp / "deepspeed"), tag="state", save_latest=False)
        full = self.full_state_dict()   # a collective: every rank gathers
        if rank == 0:
            torch.save(full, tmp / "model.pt")

    def load(self, path: Path) -> None:
        load_path, _ = self.engine.load_checkpoint(str(path / "deepspeed"), tag="state", load_optimizer_states=True,
                                                   load_lr_scheduler_states=False)
        if load_path is None:
            raise InputError("resume", f"DeepSpeed could not load {path / 'deepspeed'}")

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.raw.parameters()), modifier_rank=None):
            return {k: v.detach().cpu().clone() for k, v in self.raw.state_dict().items()}


STRATEGY_CLASSES: dict[str, type[Strategy]] = {c.name: c for c in (DDPStrategy, FSDP2Strategy, ZeRO3Strategy)}


def make_strategy(model: nn.Module, spec: TrainSpec, device: torch.device, rank: int, world_size: int,
                  bf16: bool) -> Strategy:
    units = _units(model)
    if spec.activation_checkpointing:
        units = apply_activation_checkpointing(model, units)
    return STRATEGY_CLASSES[spec.strategy](model, units, spec, device, rank, world_size, bf16)
