"""Where in the user's code a graph node comes from: the line to print next to a refusal.

torch.export records each node's Python stack (node.meta["stack_trace"]) and the submodule it ran
in (node.meta["nn_module_stack"]). The line worth showing is the innermost frame of the user's
own code, not torch's (F.linear inside nn.Linear.forward) nor fastlstm's capture.
"""

from __future__ import annotations

import os
import re
from typing import Any, List, Optional, Tuple

import torch

__all__ = ["user_source", "module_path", "is_library_path", "short_path"]

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>[^\n]+)\n(?P<code>[^\n]*)')
# torch's own code and fastlstm's capture: frames there are never the line to show
_LIBRARY_DIRS = (
    os.path.dirname(os.path.abspath(torch.__file__)) + os.sep,
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
)


def _frames(stack_trace: Optional[str]) -> List[Tuple[str, str, str, str]]:
    if not stack_trace:
        return []
    return [(m["file"], m["line"], m["func"].strip(), m["code"].strip()) for m in _FRAME.finditer(stack_trace)]


def is_library_path(path: str) -> bool:
    return os.path.abspath(path).startswith(_LIBRARY_DIRS)


def short_path(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith("..") else relative


def user_source(node: Any) -> str:
    """'model.py:14 in forward: out = self.fc(out[:, -1])', or '' when torch recorded nothing."""
    frames = _frames(node.meta.get("stack_trace"))
    if not frames:
        return ""
    user = [frame for frame in frames if not is_library_path(frame[0])]
    path, line, func, code = (user or frames)[-1]
    return f"{short_path(path)}:{line} in {func}: {code}"


def module_path(node: Any) -> str:
    """'self.encoder.rnn (GRU)' for the innermost submodule the node ran in, or ''."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, kind = list(stack.values())[-1]
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    kind_name = kind_name.rsplit(".", 1)[-1]
    return f"self.{path} ({kind_name})" if path else f"self ({kind_name})"
