"""Progress output: tqdm bars on a terminal; one plain line per epoch or run when the output goes to
a file, a pipe or CI, where a bar's carriage-return frames would fill the log."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm  # not tqdm.auto: its asyncio variant calls iter() on a loader an extra time

T = TypeVar("T")


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
        print(message, file=sys.stderr, flush=True)
