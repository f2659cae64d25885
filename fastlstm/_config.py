"""The one source of truth for an LSTM's hyperparameters and the shapes they imply."""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, Iterator, List, Tuple

import numpy as np

from ._checks import MAX_DIMENSION, MAX_NUM_LAYERS, DeclaredTensor, check_dimension_limits, check_parameter_sizes

# Integers in weight file metadata: plain ASCII digits (int() also takes " 3", "+3", "1_2" and
# other scripts' digits), and no more than int64 holds.
_METADATA_INT = re.compile(r"[0-9]{1,19}")

# nn.LSTM parameter names: weight_ih_l0, bias_hh_l1_reverse, weight_hr_l0, ...
PARAMETER_NAME = re.compile(r"^(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")


@dataclasses.dataclass(frozen=True)
class LSTMConfig:
    """Hyperparameters of an nn.LSTM, with the same names and meanings."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    bidirectional: bool = False
    proj_size: int = 0

    def __post_init__(self) -> None:
        for name in ("input_size", "hidden_size", "num_layers", "proj_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            object.__setattr__(self, name, int(value))
        for name in ("bias", "batch_first", "bidirectional"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
            object.__setattr__(self, name, bool(value))
        if self.input_size <= 0:
            raise ValueError(f"input_size must be positive, got {self.input_size}")
        if self.hidden_size <= 0:
            raise ValueError(f"hidden_size must be positive, got {self.hidden_size}")
        if self.num_layers <= 0:
            raise ValueError(f"num_layers must be positive, got {self.num_layers}")
        if self.proj_size < 0:
            raise ValueError(f"proj_size must be >= 0, got {self.proj_size}")
        check_dimension_limits(input_size=self.input_size, hidden_size=self.hidden_size,
                               num_layers=self.num_layers, proj_size=self.proj_size)
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size must be smaller than hidden_size, got proj_size={self.proj_size} "
                f"and hidden_size={self.hidden_size}"
            )

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_hidden_size(self) -> int:
        """H_out: the size of h (proj_size when projecting, else hidden_size)."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.num_directions * self.output_hidden_size

    def parameter_names(self, layer: int, direction: int) -> Tuple[str, ...]:
        """nn.LSTM's names for one layer and direction, in nn.LSTM's order."""
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        names = [f"weight_ih{suffix}", f"weight_hh{suffix}"]
        if self.bias:
            names += [f"bias_ih{suffix}", f"bias_hh{suffix}"]
        if self.proj_size > 0:
            names.append(f"weight_hr{suffix}")
        return tuple(names)

    def parameter_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Every parameter nn.LSTM would hold for this config, name -> shape, in nn.LSTM's order."""
        shapes: Dict[str, Tuple[int, ...]] = {}
        gates = 4 * self.hidden_size
        for layer, direction in self.layers_and_directions():
            ih, hh, *rest = self.parameter_names(layer, direction)
            shapes[ih] = (gates, self.layer_input_size(layer))
            shapes[hh] = (gates, self.output_hidden_size)
            if self.bias:
                shapes[rest[0]] = (gates,)
                shapes[rest[1]] = (gates,)
            if self.proj_size > 0:
                shapes[rest[-1]] = (self.proj_size, self.hidden_size)
        return shapes

    def check_size(self, itemsize: int) -> None:
        """Refuse a config whose parameters would exceed the size limits (_checks.py), by exact
        integer arithmetic on the sizes alone, before anything is allocated. The layers after the
        first all have the same shapes, so they are counted rather than listed: num_layers may be
        absurd."""
        gates = 4 * self.hidden_size
        tensors: List[DeclaredTensor] = []
        for layer, count in ((0, 1), (1, self.num_layers - 1)):
            if count == 0:
                continue
            shapes: Dict[str, Tuple[int, ...]] = {
                "weight_ih": (gates, self.layer_input_size(layer)),
                "weight_hh": (gates, self.output_hidden_size),
            }
            if self.proj_size > 0:
                shapes["weight_hr"] = (self.proj_size, self.hidden_size)
            if self.bias:
                shapes["bias_ih"] = shapes["bias_hh"] = (gates,)
            copies = count * self.num_directions
            tensors += [DeclaredTensor(f"{name}_l{layer}", shape, itemsize, copies)
                        for name, shape in shapes.items()]
        check_parameter_sizes(tensors, "the LSTM's parameters")

    def layers_and_directions(self) -> Iterator[Tuple[int, int]]:
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                yield layer, direction

    def state_shape(self, batch_size: int | None, cell: bool) -> Tuple[int, ...]:
        """Shape of h0/h_n (cell=False) or c0/c_n (cell=True); batch_size None means unbatched."""
        size = self.hidden_size if cell else self.output_hidden_size
        leading = self.num_layers * self.num_directions
        return (leading, size) if batch_size is None else (leading, batch_size, size)

    def to_metadata(self) -> Dict[str, str]:
        """String-valued metadata for weight files (safetensors metadata is str -> str)."""
        return {f.name: str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_metadata(cls, metadata: Dict[str, str]) -> "LSTMConfig":
        ints = ("input_size", "hidden_size", "num_layers", "proj_size")
        bools = ("bias", "batch_first", "bidirectional")
        values: Dict[str, object] = {}
        for name in ints:
            if name not in metadata:
                raise ValueError(f"weight file metadata is missing {name!r}")
            values[name] = _metadata_int(name, metadata[name])
        for name in bools:
            if name not in metadata:
                raise ValueError(f"weight file metadata is missing {name!r}")
            if metadata[name] not in ("True", "False"):
                raise ValueError(
                    f"weight file metadata {name!r} must be True or False, got {metadata[name]!r}"
                )
            values[name] = metadata[name] == "True"
        return cls(**values)  # type: ignore[arg-type]


def _metadata_int(name: str, text: object) -> int:
    """A metadata integer: plain ASCII digits only, so that a file means the same to every reader."""
    if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) > 19:
        raise ValueError(
            f"weight file metadata {name!r} is too large: {len(text)} digits, and fastlstm accepts "
            f"at most {MAX_DIMENSION} per dimension and {MAX_NUM_LAYERS} layers"
        )
    if not isinstance(text, str) or not _METADATA_INT.fullmatch(text):
        raise ValueError(
            f"weight file metadata {name!r} must be an integer written in plain ASCII digits "
            f"(0-9, nothing else), got {text!r}"
        )
    return int(text)
