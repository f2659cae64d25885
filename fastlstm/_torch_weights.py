"""The weights a live torch RNN module computes, as `from_torch` copies them: under weight or
spectral normalisation (or any other parametrization) what nn.LSTM runs is computed from other
parameters, and that computed weight is what fastlstm must pack."""

from __future__ import annotations

import contextlib
from typing import Any, Collection, Dict, Iterable, Iterator

from . import _interop

__all__ = ["torch_module_weights"]


def torch_module_weights(module: Any, names: Collection[str]) -> Dict[str, Any]:
    """The effective weights `names` of a torch RNN module, as detached CPU tensors.

    getattr rather than named_parameters: under a parametrization (weight_norm, spectral_norm,
    or any other) or the older normalisation hooks, the weight is computed from other parameters
    (weight_hh_l0_g and _v, parametrizations.weight_hh_l0.original0...) and is no parameter
    itself. The computation is done as in eval mode and without touching the module's state:
    spectral norm's power iteration, which runs in training mode, would update its buffers.
    """
    torch = _interop.loaded_torch()
    hooks = _normalisation_hooks(module)
    parametrizations = getattr(module, "parametrizations", {})
    weights: Dict[str, Any] = {}
    with torch.no_grad(), _eval_mode([parametrizations[n] for n in names if n in parametrizations]):
        for name in names:
            if name in hooks:
                value = hooks[name](module)
            elif name in parametrizations or hasattr(module, name):
                value = getattr(module, name)
            else:
                raise ValueError(f"the {type(module).__name__} has no parameter {name!r}")
            if getattr(value, "is_meta", False):
                raise ValueError(
                    f"the {type(module).__name__}'s weights are on the meta device (shapes without "
                    f"values, not materialized): load a state_dict into it first "
                    f"(module.to_empty(device='cpu') then module.load_state_dict(...))"
                )
            weights[name] = value.detach().cpu()
    return weights


def _normalisation_hooks(module: Any) -> Dict[str, Any]:
    """Weight name -> function computing it, for torch.nn.utils.weight_norm/spectral_norm hooks,
    whose forward pre-hook recomputes the weight (the attribute can be stale until a forward)."""
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    hooks: Dict[str, Any] = {}
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):
            hooks[hook.name] = hook.compute_weight
        elif isinstance(hook, SpectralNorm):
            hooks[hook.name] = lambda m, hook=hook: hook.compute_weight(m, do_power_iteration=False)
    return hooks


@contextlib.contextmanager
def _eval_mode(modules: Iterable[Any]) -> Iterator[None]:
    """Put modules (and their submodules) in eval mode for a block; restore each one's mode after."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    for module, _ in modes:
        module.training = False
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
