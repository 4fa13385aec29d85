"""Progress display for long work: a rich progress bar on a terminal, nothing when output is piped (CI, tests)."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")


def progress_iter(items: Sequence[T] | Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, console=_stderr_console()) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)
