"""trainer: a model-agnostic training engine (DDP / FSDP2 / DeepSpeed ZeRO-3) with exact resume.

    from actors.trainer import register_model, build_model, write_shards, ShardDataset

    @register_model("my_model")              # factory (cfg: dict) -> nn.Module
    def make(cfg): return MyModel(**cfg)     # model(batch: dict[str, Tensor], step) -> {"loss": ..., ...}

    write_shards(({"x": x[i], "y": y[i]} for i in range(n)), "data/", shard_size=1000, meta={...})
    ds = ShardDataset("data/")
    for batch in ds.batches(rank=0, world_size=1, batch_size=32, epoch=0, cursor=0): ...

Engine modules (no Ray): registry (models by name), shards (WebDataset-style tar shards + index.json,
deterministic resumable order), config (TrainSpec), strategies (ddp / fsdp2 / deepspeed_zero3),
checkpoint (atomic checkpoint directories, RNG streams, compatibility checks), engine (train: the one
loop), launch (local multi-rank processes without Ray), plots (loss.png), toy (tiny registered test
models). Ray wrapper, imported by its module path: pool (run_training on Ray Train's TorchTrainer). The
model package is actors.trainer.models. Docs: docs/trainer.md.
"""
from actors.common.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "actors.trainer.registry": ("ModelFactory", "build_model", "register_model", "registered_models"),
    "actors.trainer.shards": ("ShardDataset", "write_shards"),
    "actors.trainer.config": ("TrainSpec",),
    "actors.trainer.engine": ("train",),
    "actors.trainer.checkpoint": ("latest_checkpoint", "read_meta"),
})
