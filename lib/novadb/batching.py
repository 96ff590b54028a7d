"""Shared machinery of batched writers: budgets, stop conditions, retry policy, byte sizes.

Archive, purge and the online migrations all walk a table in bounded
transactions and must stop cleanly (Ctrl-C, ``--max-runtime``, a row budget)
between batches, never inside one.  They share one fault model
(:class:`Faults`): a lost connection is retried by reconnecting, a conflict
(deadlock, certification failure, lock wait) by running the batch again after
a jittered pause, and a batch that keeps conflicting is split; all of it for
as long as the run's budget allows, after which the caller reports one line
that says what was done and that a rerun finishes the job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

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

T = TypeVar("T")

# 64 MiB: well under Group Replication's 150 MB default transaction limit and
# Galera's usual write-set limits, with room for index and binlog overhead.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

# Rows one batched transaction moves at most (parents and everything below
# them).  A speed setting once the cell outgrows the buffer pool: every batch
# reaches its children through their random instance_uuid index entries, so
# fewer, larger batches read and write those index pages fewer times (on the
# 100,000-instance benchmark with a 128 MB pool, batches of 100,000 rows ran
# at 70% of the set-based floor's speed, batches of 50,000 at 58%).  Bounded
# because a batch holds its locks until it commits and is one Galera write
# set: on a cluster the bound comes down to what wsrep_max_ws_rows allows
# (each moved row is an insert and a delete there).
DEFAULT_MAX_ROWS = 100_000


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


# How long a run keeps trying before it gives up, counted from the first
# failure of an unbroken series (any success starts the count again).
# Conflicts: a busy cluster can certify-fail a batch for minutes; with
# --max-runtime they are retried up to its deadline instead.
DEFAULT_CONFLICT_BUDGET = 300.0
# A lost server: a MySQL router or VIP fails over in seconds; a node that
# stays down for a minute is better left to a rerun on another node.  Never
# longer than --max-runtime allows, but always a few attempts.
DEFAULT_RECONNECT_BUDGET = 60.0
MIN_BUDGET = 2.0
# Conflicts in a row on one batch before it is split in two.
SHRINK_AFTER = 3


@dataclass
class Adaptation:
    """What a run did to get through faults: shown in results and progress."""

    retries: int = 0  # a batch ran again after a conflict (deadlock, certification, lock wait)
    halvings: int = 0  # a batch was split: too big for the server, or conflicting again and again
    reconnects: int = 0  # a connection was lost and the work resumed on a new one

    def add(self, other: Adaptation) -> None:
        """Add another run's counts to these."""
        self.retries += other.retries
        self.halvings += other.halvings
        self.reconnects += other.reconnects

    def text(self) -> str:
        """``3 retries, 1 halving, 0 reconnects`` (empty when nothing happened)."""
        if not (self.retries or self.halvings or self.reconnects):
            return ""
        return f"{self.retries} retries, {self.halvings} halvings, {self.reconnects} reconnects"


class GaveUp(Exception):
    """The retry budget ran out; ``cause`` is the last error, ``kind`` lost or conflict."""

    def __init__(self, cause: BaseException, kind: str, seconds: float, attempts: int) -> None:
        super().__init__(dberrors.message(cause))
        self.cause = cause
        self.kind = kind
        self.seconds = seconds
        self.attempts = attempts

    def describe(self) -> str:
        """``lost connection for 61 s (12 attempts): (2003) Can't connect ...``."""
        what = "the server was unreachable" if self.kind == "lost" else "conflicts did not stop"
        if self.kind == "interrupted":
            what = "interrupted while retrying"
        return (
            f"{what} for {self.seconds:.0f} s ({self.attempts} attempts; last error "
            f"{dberrors.message(self.cause)})"
        )


class Shrink(Exception):
    """Conflicts keep hitting this batch: split it, and try the halves."""


def _kind(exc: BaseException | None) -> str:
    return "lost" if exc is not None and dberrors.is_lost_connection(exc) else "conflict"


class Faults:
    """One run's fault budget on one database, shared by every batch of the run.

    :meth:`call` runs a unit of work (a batch, a read) again after lost
    connections and conflicts, with jittered exponential pauses, until it
    succeeds or the budget of the current series of failures is spent, then
    raises :class:`GaveUp`.  ``redo`` names other exceptions that mean "run it
    again" (archive's row-count mismatch).
    """

    def __init__(
        self,
        stop: StopWhen,
        counts: Adaptation,
        *,
        conflict_budget: float = DEFAULT_CONFLICT_BUDGET,
        reconnect_budget: float = DEFAULT_RECONNECT_BUDGET,
        on_retry: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.stop = stop
        self.counts = counts
        self.conflict_budget = conflict_budget
        self.reconnect_budget = reconnect_budget
        self.on_retry = on_retry
        self._since: float | None = None  # first failure of the current series
        self._lock = threading.Lock()

    def deadline(self, kind: str, since: float) -> float:
        """When a series of failures of ``kind`` that began at ``since`` is given up."""
        floor = since + MIN_BUDGET
        if kind == "lost":
            end = since + self.reconnect_budget
            if self.stop.deadline is not None:
                end = min(end, self.stop.deadline)
            return max(end, floor)
        if self.stop.deadline is not None:
            return max(self.stop.deadline, floor)
        return since + self.conflict_budget

    def call(  # noqa: C901 - one retry policy: each fault class (lost, conflict, too big) is a branch
        self,
        work: Callable[[], T],
        *,
        redo: Callable[[BaseException], bool] | None = None,
        shrinkable: bool = False,
    ) -> T:
        """``work()``, run again after lost connections and conflicts within the budget.

        With ``shrinkable``, the third conflict in a row raises :class:`Shrink`
        so the caller can split the batch (the budget's clock keeps running).
        """
        conflicts = 0

        def again(exc: BaseException) -> bool:
            if isinstance(exc, Shrink):
                return False
            return (
                dberrors.is_lost_connection(exc)
                or dberrors.is_retryable(exc)
                or (redo is not None and redo(exc))
            )

        def attempt() -> T:
            nonlocal conflicts
            try:
                result = work()
            except Exception as exc:
                if self._since is None and again(exc):
                    self._since = time.monotonic()
                if again(exc) and _kind(exc) == "conflict":
                    conflicts += 1
                    if shrinkable and conflicts >= SHRINK_AFTER:
                        raise Shrink(dberrors.message(exc)) from exc
                raise
            self._since = None
            return result

        conflict_wait = wait_random_exponential(multiplier=0.05, max=5)
        lost_wait = wait_random_exponential(multiplier=0.25, max=5)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return (lost_wait if _kind(exc) == "lost" else conflict_wait)(state)

        def give_up(state: RetryCallState) -> bool:
            if self.stop.event is not None and self.stop.event.is_set():
                return True
            exc = state.outcome.exception() if state.outcome else None
            since = self._since if self._since is not None else time.monotonic()
            return time.monotonic() + state.upcoming_sleep > self.deadline(_kind(exc), since)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if exc is None:
                return
            kind = _kind(exc)
            with self._lock:
                if kind == "lost":
                    self.counts.reconnects += 1
                else:
                    self.counts.retries += 1
            if self.on_retry is not None:
                self.on_retry(kind, exc)

        retrying = Retrying(
            retry=retry_if_exception(again),
            wait=wait,
            stop=give_up,
            sleep=self.stop.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Exception as exc:
            if isinstance(exc, Shrink) or not again(exc):
                raise
            since = self._since if self._since is not None else time.monotonic()
            interrupted = self.stop.event is not None and self.stop.event.is_set()
            kind = "interrupted" if interrupted else _kind(exc)
            attempts = int(retrying.statistics.get("attempt_number", 1))
            raise GaveUp(exc, kind, time.monotonic() - since, attempts) from exc
