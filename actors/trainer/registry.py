"""The model registry: a model is a name and a factory `(cfg: dict) -> torch.nn.Module`.

    from actors.trainer import register_model, build_model

    @register_model("my_model")
    def make(cfg: dict) -> torch.nn.Module:
        return MyModel(**cfg)

    model = build_model("my_model", {"d_model": 64})

The model contract the engine relies on:
- `model(batch: dict[str, Tensor], step: int) -> dict[str, Tensor]` with key "loss" (a scalar, the one
  that is backpropagated) and optional other scalar metrics (logged, averaged over ranks). The loss is
  computed inside `forward`, so FSDP2 / ZeRO-3 hooks wrap all of it; `step` is the global step (for
  curricula), identical on every rank.
- optional `model.fsdp_units() -> list[nn.Module]`: the submodules FSDP2 shards individually (e.g. the
  blocks) and activation checkpointing wraps; the root is always sharded last.
- the model must be deterministic given the torch RNG (the engine seeds it) so a resumed run is exact.

Unknown names raise `UnknownName("model.name", name, known)`. Registration happens at import: the
built-in test models (actors.trainer.toy) and the model package actors.trainer.models (when present)
are imported the first time a name is looked up.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from actors.common.errors import UnknownName

__all__ = ["ModelFactory", "build_model", "register_model", "registered_models"]

ModelFactory = Callable[[dict[str, Any]], Any]

_REGISTRY: dict[str, ModelFactory] = {}
_PACKAGES = ("actors.trainer.toy", "actors.trainer.models")
_loaded = False


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register `factory` under `name` (re-registering the same function is a no-op;
    another function under a taken name is an error, so two models never shadow each other)."""
    if not isinstance(name, str) or not name:
        raise ValueError("register_model needs a non-empty name")

    def deco(factory: ModelFactory) -> ModelFactory:
        old = _REGISTRY.get(name)
        if old is not None and getattr(old, "__qualname__", None) != getattr(factory, "__qualname__", None):
            raise ValueError(f"model {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        _REGISTRY[name] = factory
        return factory

    return deco


def _load_packages() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for pkg in _PACKAGES:
        try:
            importlib.import_module(pkg)
        except ModuleNotFoundError as exc:   # the model package is optional; a broken import inside it is not
            if exc.name != pkg:
                raise


def registered_models() -> list[str]:
    """The registered model names, sorted."""
    _load_packages()
    return sorted(_REGISTRY)


def build_model(name: str, cfg: dict[str, Any] | None = None) -> Any:
    """The module `name`'s factory builds from `cfg` (an UnknownName naming `model.name` if none)."""
    _load_packages()
    if name not in _REGISTRY:
        raise UnknownName("model.name", name, sorted(_REGISTRY))
    return _REGISTRY[name](dict(cfg or {}))
