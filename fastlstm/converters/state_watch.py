"""Catch modules that keep state on themselves between calls, and leave the module as it was.

The classic tutorial forecaster does `lstm_out, self.hidden_cell = self.lstm(x, self.hidden_cell)`:
each call starts from the previous call's state. A converted program is a pure function, and
fastlstm's decision is to refuse such a module rather than guess (carrying state inside a served
model would leak one client's state into another's request), with a message that names the
attribute and shows the rewrite: pass the state in, return it.

While the module is captured, `AttributeWatch` notes every attribute the user's code assigns on a
submodule (with the line doing it), compares every submodule's attributes before and after, and
puts back what was there: tracing must not leave fake tensors in the user's module. Attributes
torch's own code reassigns during a trace are restored but not reported.
"""

from __future__ import annotations

import linecache
import sys
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

from .capture_ops import capturing
from .source_lines import is_library_path, short_path

__all__ = ["AttributeWatch", "stateful_module_problems"]

# Attributes torch's own machinery reassigns during a trace (nn.LSTM re-lists its weights).
_IGNORED = frozenset({"_flat_weights", "training"})
_MISSING = object()


class AttributeWatch:
    """Context manager; afterwards `changes` lists (module path, attribute, source line) for
    every attribute the user's code assigned during the trace, and every attribute of every
    submodule is back to what it was before (whoever changed it)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.changes: List[Tuple[str, str, str]] = []
        self._lines: Dict[Tuple[int, str], str] = {}

    def __enter__(self) -> "AttributeWatch":
        self._paths = {id(m): path for path, m in self.module.named_modules(remove_duplicate=False)}
        self._modules = {id(m): m for m in self.module.modules()}
        self._snapshots = {key: dict(vars(m)) for key, m in self._modules.items()}
        self._original_setattr = nn.Module.__setattr__
        watch = self

        def recording_setattr(module: nn.Module, name: str, value: Any) -> None:
            if id(module) in watch._modules and name not in _IGNORED and capturing():
                line = _assigning_user_line()
                if line:
                    watch._lines.setdefault((id(module), name), line)
            watch._original_setattr(module, name, value)

        nn.Module.__setattr__ = recording_setattr  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc_info: Any) -> None:
        nn.Module.__setattr__ = self._original_setattr  # type: ignore[method-assign]
        for key, module in self._modules.items():
            before, after = self._snapshots[key], vars(module)
            for name in sorted(set(before) | set(after)):
                old, new = before.get(name, _MISSING), after.get(name, _MISSING)
                if old is new or name in _IGNORED:
                    continue
                line = self._lines.get((key, name))
                if line is not None:  # else torch's own bookkeeping (nn.LSTM re-lists its weights)
                    self.changes.append((self._paths.get(key, "?"), name, line))
                if old is _MISSING:
                    del after[name]
                else:
                    after[name] = old


def _assigning_user_line() -> Optional[str]:
    """The line of user code doing this assignment, or None if torch's own code is doing it.
    Frames of __setattr__ overrides (nn.LSTM has one) are skipped: they relay the assignment."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_name == "__setattr__":
        frame = frame.f_back
    if frame is None or is_library_path(frame.f_code.co_filename):
        return None
    path = frame.f_code.co_filename
    code = linecache.getline(path, frame.f_lineno).strip()
    return f"{short_path(path)}:{frame.f_lineno} in {frame.f_code.co_name}: {code}"


def stateful_module_problems(changes: List[Tuple[str, str, str]]) -> List[str]:
    """One problem line per attribute a forward assigned."""
    problems = []
    for path, name, line in changes:
        owner = f"self.{path}.{name}" if path else f"self.{name}"
        where = f" at {line}" if line else ""
        problems.append(
            f"forward assigns {owner}{where}: the module keeps state on itself between calls, which a "
            f"converted model does not (it would carry one request's state into the next). Rewrite "
            f"forward to take the state as an argument and return the new one, e.g. "
            f"`def forward(self, x, {name}): out, {name} = self.lstm(x, {name}); ...; return prediction, {name}`, "
            f"and keep the state in the caller (zeros to start, or None for nn.LSTM's default)"
        )
    return problems
