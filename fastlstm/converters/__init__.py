"""Converters from training frameworks to fastlstm programs (kept apart from the runtime, which
never imports them: a serving process needs neither torch nor this package).

    model = fastlstm.convert(module, example_inputs)   # needs torch
    model.save("model.safetensors")                    # weights + program in one file
    model = fastlstm.load("model.safetensors")         # torch-free
"""

from __future__ import annotations

from typing import Any

from .supported import SUPPORTED_FUNCTIONS, SUPPORTED_MODULES, SUPPORTED_SUMMARY

__all__ = ["convert", "SUPPORTED_MODULES", "SUPPORTED_FUNCTIONS", "SUPPORTED_SUMMARY"]


def convert(module: Any, example_inputs: Any, *, dynamic_shapes: Any = None, check: bool = True) -> Any:
    """Convert a trained torch `nn.Module` (embedding, LSTMs, head...) into a `fastlstm.Model`
    that runs without torch.

    Args:
        module: the model. It is converted with eval-mode semantics (dropout off, BatchNorm's
            running statistics); a module in training mode is switched to eval for the capture,
            restored afterwards, and a UserWarning says so. The module is not modified.
        example_inputs: forward's arguments: a tensor, or a tuple of them (nested tuples, lists
            and dicts of tensors, and None, are kept as nested). Give sizes >= 2 on the axes that
            should vary (e.g. batch 2, length 7): sizes 0 and 1 are fixed by torch.export.
        dynamic_shapes: torch.export's argument, to override which axes vary. By default every
            axis of size >= 2 varies except the last axis of floating tensors of 2 or more
            dimensions (the features); an axis the module's code ties to a constant stays fixed,
            with a UserWarning naming it.
        check: run the converted model and the module on the example inputs and refuse the
            conversion if they differ (a safety net; costs one forward pass of each).

    Returns:
        a fastlstm.Model: call it with forward's arguments (numpy or torch), `save` it.

    Raises:
        fastlstm.ConversionError (a ValueError): forward uses operations fastlstm does not
            support (all are listed, each with the line of your code it comes from), keeps state
            on the module between calls (`self.hidden = ...` in forward), or cannot be traced.
        TypeError: module or example_inputs of the wrong kind.
    """
    try:
        from .torch_module import convert_module  # imports torch
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise ModuleNotFoundError(
            "fastlstm.convert needs PyTorch: pip install fastlstm[torch]. Loading and running a "
            "converted model (fastlstm.load) does not",
            name="torch",
        ) from exc
    return convert_module(module, example_inputs, dynamic_shapes=dynamic_shapes, check=check)
