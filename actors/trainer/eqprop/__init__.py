"""Equilibrium Propagation: an energy-based MLP trained from the contrast of two settled phases.

    import torch
    from actors.trainer.eqprop import EqPropNet, ep_gradients, bptt_gradients, predict, settle

    net = EqPropNet([784, 256, 10], activation="hardsigmoid", seed=0)
    grads, stats = ep_gradients(net, x, y, beta=0.1, mode="symmetric")   # {"layers.0.weight": ..., ...}
    for name, p in net.named_parameters():
        p.grad = grads[name]                                              # then any torch optimizer step
    logits = predict(net, x, steps=30)                                    # the free phase's output layer

Engine modules (no Ray): energy (EqPropNet, the energy and costs), settle (the phases, backends,
NotConverged), gradients (one_sided / symmetric / holomorphic EP, BPTT and implicit references). The
kernels (persistent Triton, fused Triton + CUDA graph, CuPy twin) live in kernels/eqprop. Docs:
docs/eqprop.md.
"""
from actors.trainer.eqprop.energy import ACTIVATIONS, COSTS, EqPropNet, energy
from actors.trainer.eqprop.gradients import MODES, bptt_gradients, ep_gradients, implicit_gradients, predict
from actors.trainer.eqprop.settle import BACKENDS, UPDATES, NotConverged, settle, settle_residual

__all__ = ["ACTIVATIONS", "BACKENDS", "COSTS", "MODES", "UPDATES", "EqPropNet", "NotConverged", "bptt_gradients",
           "energy", "ep_gradients", "implicit_gradients", "predict", "settle", "settle_residual"]
