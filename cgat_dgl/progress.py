"""Progress output: tqdm bars on a terminal; one plain line per epoch or run when the output goes to
a file, a pipe or CI, where a bar's carriage-return frames would fill the log."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm  # not tqdm.auto: its asyncio variant calls iter() on a loader an extra time

T = TypeVar("T")

# Set by a process that shares its log with others (a manifest's workers), so that each of its lines
# names what it belongs to.
_line_prefix = ""


def set_line_prefix(prefix: str) -> None:
    global _line_prefix
    _line_prefix = prefix


def on_terminal() -> bool:
    """Whether progress bars would be seen live (tqdm draws on stderr)."""
    return sys.stderr.isatty()


def bar(iterable: Iterable[T] | None = None, *, enabled: bool = True, **options: Any) -> "tqdm[T]":
    """A tqdm bar, drawn only when ``enabled`` and on a terminal."""
    return tqdm(iterable, disable=not enabled or not on_terminal(), **options)


def line(message: str, *, enabled: bool = True) -> None:
    """One plain progress line on stderr (beside where bars draw, so stdout keeps only results),
    printed when ``enabled`` and not on a terminal (where a bar shows it)."""
    if enabled and not on_terminal():
        print(_line_prefix + message, file=sys.stderr, flush=True)
