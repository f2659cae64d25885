"""fastlstm: fast, exact CPU inference for PyTorch-trained LSTMs.

    import fastlstm
    model = fastlstm.load("model.safetensors")      # or LSTM.from_torch / from_state_dict
    output, (h_n, c_n) = model(x)                  # exactly nn.LSTM's shapes and semantics
"""

import importlib as _importlib
import os as _os

try:
    _importlib.import_module("._core", __name__)  # first, alone: its failure gets the message below
except ImportError as _error:  # most often: Python started in the repository, beside an unbuilt source tree
    raise ImportError(
        f"fastlstm's compiled extension (fastlstm._core) is not built in {_os.path.dirname(__file__)!r}. "
        f"Install fastlstm with `pip install .` (or `pip install -e .` to develop) and run Python "
        f"outside the source tree, or build it in place with `python setup.py build_ext --inplace`"
    ) from _error
from ._cell import LSTMCell
from ._config import LSTMConfig
from ._errors import ConversionError
from ._model import LSTM, load
from ._program import Model
from ._batcher import Batcher, BatcherClosed, BatcherFull
from .converters import convert  # torch is imported only when convert is called
from .accelerate import accelerate  # likewise, torch is imported only when it is called
from ._system import (
    MAX_THREADS,
    cpu_info,
    get_num_threads,
    get_workspace_limit,
    set_isa,
    set_num_threads,
    set_workspace_limit,
)

__all__ = [
    "LSTM",
    "LSTMCell",
    "LSTMConfig",
    "Model",
    "Batcher",
    "BatcherFull",
    "BatcherClosed",
    "ConversionError",
    "convert",
    "accelerate",
    "load",
    "cpu_info",
    "set_isa",
    "get_num_threads",
    "set_num_threads",
    "MAX_THREADS",
    "get_workspace_limit",
    "set_workspace_limit",
]
__version__ = "0.1.0"

if _os.environ.get("FASTLSTM_ISA"):
    set_isa(_os.environ["FASTLSTM_ISA"])
