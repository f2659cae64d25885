"""fastlstm.accelerate: run the nn.LSTM / nn.LSTMCell modules inside a torch model on fastlstm.

    model = fastlstm.accelerate(model)      # in place; returns the model
    with torch.no_grad():
        y = model(x)                        # the LSTMs run on fastlstm, the rest on torch

For models with parts `fastlstm.convert` does not handle (a CNN front end, say): the recurrent
part is sped up and everything else stays torch. Each LSTM module keeps its identity: its class
is swapped for a subclass of its own class (so isinstance checks, attributes, hooks, parameters
and `state_dict()` keys are unchanged, and optimizers keep their parameters), whose forward

* runs torch's own computation whenever autograd needs it (grad mode on and a parameter or an
  input requires grad), in training mode with inter-layer dropout or parametrized (weight or
  spectral norm) weights, under autocast, during
  torch.compile / torch.export / tracing / fastlstm.convert, for non-CPU or non-float32/float64
  tensors, and for inputs fastlstm refuses (so errors are torch's own);
* otherwise runs `fastlstm.LSTM.from_torch(module)` (`LSTMCell.from_torch`), packed on first use
  and repacked when a parameter changed since (each parameter's and buffer's `_version` and
  data_ptr are compared with those at packing time: optimizer steps, `load_state_dict`,
  `module.double()`, assigning a new Parameter). Writes through `param.data` bypass the version
  counter: call `module.fastlstm_repack()` after those.

torch is imported only when `accelerate` is called.
"""

from __future__ import annotations

import sys
import threading
import warnings
from typing import Any, Dict, Optional, Tuple

__all__ = ["accelerate"]

_CLASSES: Dict[type, type] = {}  # original class -> its accelerated subclass
_CLASSES_LOCK = threading.Lock()
_CACHE = "_fastlstm_cache"  # (key, packed fastlstm model) of the last packing, or None
_LOCK = "_fastlstm_lock"


def accelerate(module: Any) -> Any:
    """Make every `nn.LSTM` / `nn.LSTMCell` inside `module` (the root included) run on fastlstm
    when no gradients are needed; in place. Returns `module` (the same object).

    The modules are not copied or replaced: each one's class becomes a subclass of its own class
    whose forward picks fastlstm or torch per call (see the module docstring), so `state_dict()`
    keys, checkpoints, hooks and optimizers are unaffected. Accelerating twice is a no-op. An
    nn.LSTM subclass that overrides `forward` is left alone, with a UserWarning naming it.
    Accelerated modules pickle and deepcopy (they come back accelerated).
    """
    import torch
    from torch import nn

    if not isinstance(module, nn.Module):
        raise TypeError(f"accelerate expects a torch.nn.Module, got {type(module).__module__}.{type(module).__name__}")
    for name, child in module.named_modules():
        if not isinstance(child, (nn.LSTM, nn.LSTMCell)) or isinstance(child, _Accelerated):
            continue
        if isinstance(child, torch.jit.ScriptModule):
            continue
        base = nn.LSTM if isinstance(child, nn.LSTM) else nn.LSTMCell
        overriding = [c for c in type(child).__mro__[: type(child).__mro__.index(base)] if "forward" in vars(c)]
        if overriding:
            warnings.warn(
                f"fastlstm.accelerate: {name or 'the module'} ({type(child).__qualname__}) overrides "
                f"forward, so it is left to run on torch",
                UserWarning,
                stacklevel=2,
            )
            continue
        child.__class__ = _accelerated_class(type(child))
        _reset_cache(child)
    return module


def _accelerated_class(cls: type) -> type:
    with _CLASSES_LOCK:
        sub = _CLASSES.get(cls)
        if sub is None:
            from torch import nn

            mixin = _AcceleratedLSTM if issubclass(cls, nn.LSTM) else _AcceleratedLSTMCell
            # The original name: printed models look as before, and code testing names still works.
            sub = type(cls.__name__, (mixin, cls), {"__module__": cls.__module__, "_fastlstm_base": cls,
                                                     "__qualname__": cls.__qualname__})
            _CLASSES[cls] = sub
        return sub


def _reset_cache(module: Any) -> None:
    module.__dict__[_CACHE] = None
    module.__dict__[_LOCK] = threading.Lock()


def _new_accelerated(base: type) -> Any:
    """Unpickling (and deepcopy): an empty accelerated module, whose state is set next."""
    cls = _accelerated_class(base)
    return cls.__new__(cls)


def _plain(value: Any, tensor_types: Tuple[type, ...]) -> bool:
    return type(value) in tensor_types


class _Accelerated:
    """What both accelerated classes share: the per-call choice, packing and pickling."""

    _fastlstm_base: type

    def fastlstm_repack(self) -> None:
        """Drop the packed weights: the next fastlstm call packs the module's current ones. Needed
        only after writes that bypass the version counter (`param.data.copy_(...)`)."""
        with self.__dict__[_LOCK]:
            self.__dict__[_CACHE] = None

    def _fastlstm_tensors(self) -> list:
        if self._modules:  # parametrized: the originals live in submodules
            return [*self.parameters(), *self.buffers()]
        return [*self._parameters.values(), *self._buffers.values()]

    def _fastlstm_packed(self, torch: Any) -> Optional[Any]:
        """The packed fastlstm model for the current weights, or None if they are not on the CPU
        in float32/float64 (or need grad: the caller checks grad mode)."""
        tensors = self._fastlstm_tensors()
        try:
            key = tuple((t._version, t.data_ptr(), id(t)) if t is not None else None for t in tensors)
        except RuntimeError:  # tensors without storage (meta, wrapped): torch's business
            return None
        cache = self.__dict__.get(_CACHE)
        if cache is not None and cache[0] == key:  # checked below when it was cached
            return cache[1]
        dtype = None
        for t in tensors:
            if t is None:
                continue
            if t.device.type != "cpu" or t.is_meta:
                return None
            if t.is_floating_point():
                if t.dtype not in (torch.float32, torch.float64) or (dtype is not None and t.dtype != dtype):
                    return None
                dtype = t.dtype
        with self.__dict__[_LOCK]:
            cache = self.__dict__.get(_CACHE)
            if cache is not None and cache[0] == key:
                return cache[1]
            # The weights are read after `key` was taken: a change during packing shows next call.
            try:
                packed = self._fastlstm_pack()
            except (TypeError, ValueError):
                packed = None  # weights fastlstm refuses (too large...): torch runs these ones
            self.__dict__[_CACHE] = (key, packed)
            return packed

    def _fastlstm_forward(self, torch: Any, input: Any, data: Any, hx: Any) -> Any:
        """forward on fastlstm when this call may use it (`data`: the input's tensor), else torch's."""
        packed = None
        states = tuple(hx) if isinstance(hx, (tuple, list)) and len(hx) == 2 else (None,) if hx is None else None
        if states is not None and self._fastlstm_usable(torch, (data, *states)):
            packed = self._fastlstm_packed(torch)
            if packed is not None and data.dtype is not _torch_dtype(packed.dtype, torch):
                packed = None
        if packed is not None:
            try:
                return packed(input, hx)
            except (TypeError, ValueError, RuntimeError):
                pass  # torch says what is wrong, in its own words (or computes what fastlstm refused)
        return super().forward(input, hx)  # type: ignore[misc]

    def _fastlstm_usable(self, torch: Any, tensors: Tuple[Any, ...]) -> bool:
        """Whether this call may run on fastlstm, as far as its inputs and torch's modes say."""
        if self.training and (self._modules or self._forward_pre_hooks):
            return False  # parametrized or normalised weights: spectral norm iterates in training
        if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
            return False
        capture = sys.modules.get("fastlstm.converters.capture_ops")
        if capture is not None and capture.capturing():
            return False
        any_autocast = getattr(torch._C, "_is_any_autocast_enabled", None)
        if any_autocast is not None and any_autocast() or any_autocast is None and torch.is_autocast_cpu_enabled():
            return False
        plain = (torch.Tensor, torch.nn.Parameter)
        grad = torch.is_grad_enabled()
        wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
        for t in tensors:
            if t is None:
                continue
            if not _plain(t, plain) or t.device.type != "cpu" or wrapped is not None and wrapped(t):
                return False  # subclasses, fake tensors, vmap/grad transforms: torch's business
            if grad and t.requires_grad:
                return False
        if grad and any(p.requires_grad for p in self.parameters()):
            return False
        return True

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(super().__getstate__())  # type: ignore[misc]
        state.pop(_CACHE, None)
        state.pop(_LOCK, None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        _reset_cache(self)

    def __reduce_ex__(self, protocol: int) -> Any:
        if type(self) is not _CLASSES.get(self._fastlstm_base):  # e.g. parametrized afterwards
            return super().__reduce_ex__(protocol)
        return (_new_accelerated, (self._fastlstm_base,), self.__getstate__())


class _AcceleratedLSTM(_Accelerated):
    """nn.LSTM's forward, on fastlstm when no gradient is needed."""

    def _fastlstm_pack(self) -> Any:
        from ._model import LSTM

        return LSTM.from_torch(self)

    def forward(self, input: Any, hx: Any = None) -> Any:
        torch = sys.modules["torch"]
        if self.training and self.dropout > 0 and self.num_layers > 1:
            return super().forward(input, hx)  # type: ignore[misc]
        data = input.data if isinstance(input, torch.nn.utils.rnn.PackedSequence) else input
        return self._fastlstm_forward(torch, input, data, hx)


class _AcceleratedLSTMCell(_Accelerated):
    """nn.LSTMCell's forward, on fastlstm when no gradient is needed."""

    def _fastlstm_pack(self) -> Any:
        from ._cell import LSTMCell

        return LSTMCell.from_torch(self)

    def forward(self, input: Any, hx: Any = None) -> Any:
        return self._fastlstm_forward(sys.modules["torch"], input, input, hx)


def _torch_dtype(numpy_dtype: Any, torch: Any) -> Any:
    return torch.float64 if numpy_dtype.itemsize == 8 else torch.float32
