"""Progress bars for the CLI: rows moved, rows/s, adaptation, elapsed, one bar per cell.

Shown only when stdout is a terminal (and not with --json); otherwise the
library's events are dropped, except warnings, which always reach stderr.
Batch events carry running totals (``data["total"]``) or per-batch counts
(``data["done"]``), and ``data["expected"]`` when the operation knows how much
there is (an ETA is shown then); a bar is created the first time an
operation/cell pair reports.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from novadb.progress import Event


class Bars:
    """Turns progress events into rich progress bars on stderr."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("{task.completed:,.0f} rows"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[adapted]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),  # blank unless the operation said how much there is
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._started = False

    def __call__(self, event: Event) -> None:
        """Advance the bar an event belongs to; print other events above the bars."""
        if event.kind != "batch":
            self._progress.console.print(f"[dim]{event.message}[/dim]")
            return
        if not self._started:
            self._progress.start()
            self._started = True
        cell = str(event.data.get("cell", ""))
        key = f"{event.operation} {cell}".strip()
        if key not in self._tasks:
            self._tasks[key] = self._progress.add_task(key, total=None, rate="", adapted="")
        task_id = self._tasks[key]
        if "expected" in event.data:
            self._progress.update(task_id, total=float(str(event.data["expected"])))
        if "total" in event.data:
            self._progress.update(task_id, completed=float(str(event.data["total"])))
        elif "done" in event.data:
            self._progress.advance(task_id, float(str(event.data["done"])))
        adapted = [
            f"{event.data[k]} {k}" for k in ("retries", "halvings", "reconnects")
            if event.data.get(k)
        ]  # fmt: skip
        if adapted:
            self._progress.update(task_id, adapted=", ".join(adapted))
        task = self._progress.tasks[task_id]
        speed = task.speed
        self._progress.update(task_id, rate=f"{speed:,.0f} rows/s" if speed else "")

    def stop(self) -> None:
        """Leave the bars as they ended."""
        if self._started:
            self._progress.stop()
            self._started = False


@contextmanager
def stop_on_ctrl_c() -> Iterator[threading.Event]:
    """First Ctrl-C: finish the batch in progress, then stop.  Second: stop now."""
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        sys.stderr.write("novadb: stopping after the batch in progress (Ctrl-C again to abort)\n")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (tests calling main() from a worker)
        yield stop
        return
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
