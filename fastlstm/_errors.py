"""Errors of the whole-model path, importable without torch (a serving process raises them too)."""

from __future__ import annotations

from typing import Iterable, List

__all__ = ["ConversionError"]


class ConversionError(ValueError):
    """`fastlstm.convert` cannot turn a module into a fastlstm program.

    The message lists every problem found, each with the line of the user's source it comes
    from; `problems` holds the same entries one string each, for tools and tests.
    """

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.problems: List[str] = list(problems)
