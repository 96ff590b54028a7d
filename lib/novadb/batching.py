"""Shared machinery of batched writers: budgets, stop conditions, retry policy, byte sizes.

Archive, purge and the online migrations all walk a table in bounded
transactions and must stop cleanly (Ctrl-C, ``--max-runtime``, a row budget)
between batches, never inside one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from novadb import dberrors

# 64 MiB: well under Group Replication's 150 MB default transaction limit and
# Galera's usual write-set limits, with room for index and binlog overhead.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def retrying(
    attempts: int = 10,
    retry_on: Callable[[BaseException], bool] = dberrors.is_retryable,
    on_retry: Callable[[BaseException | None], None] | None = None,
) -> Retrying:
    """Retry a whole batch on deadlocks, lock waits and certification failures, jittered."""

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.outcome.exception() if state.outcome else None)

    return Retrying(
        before_sleep=before_sleep,
        retry=retry_if_exception(retry_on),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.05, max=5),
        reraise=True,
    )


@dataclass
class Budget:
    """A row budget shared by concurrent workers (None: unlimited)."""

    remaining: int | None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve(self, wanted: int) -> int:
        """Take up to ``wanted`` rows for the next batch; concurrent workers never overlap."""
        with self._lock:
            if self.remaining is None:
                return wanted
            granted = max(0, min(wanted, self.remaining))
            self.remaining -= granted
            return granted

    def refund(self, unused: int) -> None:
        """Give back what a batch reserved but did not use."""
        with self._lock:
            if self.remaining is not None and unused > 0:
                self.remaining += unused

    @property
    def exhausted(self) -> bool:
        """No rows left to spend."""
        with self._lock:
            return self.remaining is not None and self.remaining <= 0


@dataclass
class StopWhen:
    """Why a run should stop after the batch in progress."""

    event: threading.Event | None = None
    deadline: float | None = None  # time.monotonic() value

    @classmethod
    def after(cls, max_runtime: float | None, event: threading.Event | None) -> StopWhen:
        """Stop on ``event`` or once ``max_runtime`` seconds have passed."""
        deadline = time.monotonic() + max_runtime if max_runtime is not None else None
        return cls(event, deadline)

    def reason(self, *, progressed: bool = True) -> str | None:
        """``interrupted``, ``max-runtime`` or None to go on.

        ``progressed=False`` (nothing done yet in this run) ignores the
        deadline: a run that may stop on time still does one batch, so a
        caller that loops on it (COU's archive-data) always gets somewhere.
        """
        if self.event is not None and self.event.is_set():
            return "interrupted"
        if progressed and self.deadline is not None and time.monotonic() >= self.deadline:
            return "max-runtime"
        return None

    def sleep(self, seconds: float) -> None:
        """Sleep between batches, waking early when asked to stop."""
        if seconds <= 0:
            return
        if self.event is not None:
            self.event.wait(seconds)
        else:
            time.sleep(seconds)


def row_sizes(conn: Connection, tables: list[str]) -> dict[str, tuple[int, int]]:
    """(rows, average row bytes) per table from the server's statistics (MySQL only).

    Estimates, not counts: enough to keep a transaction well below a cluster's
    size limit without scanning anything.
    """
    if conn.dialect.name != "mysql" or not tables:
        return {}
    info = sa.table(
        "TABLES",
        sa.column("TABLE_SCHEMA"),
        sa.column("TABLE_NAME"),
        sa.column("TABLE_ROWS"),
        sa.column("AVG_ROW_LENGTH"),
        schema="information_schema",
    )
    query = sa.select(info.c.TABLE_NAME, info.c.TABLE_ROWS, info.c.AVG_ROW_LENGTH).where(
        sa.func.database() == info.c.TABLE_SCHEMA, info.c.TABLE_NAME.in_(tables)
    )
    return {str(name): (int(rows or 0), int(avg or 0)) for name, rows, avg in conn.execute(query)}
