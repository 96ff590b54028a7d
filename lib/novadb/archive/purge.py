"""``purge``: delete rows from shadow tables, older than a date or all of them.

Which column dates a shadow row is Nova's rule: ``deleted_at``, else
``updated_at``, else ``created_at``, except ``shadow_instance_actions(_events)``
(``created_at``: they are never soft-deleted) and ``shadow_task_log``
(``updated_at``).  Nova runs one unbounded DELETE per table; here each table is
walked by primary key in bounded batches, so a purge of millions of rows never
builds one huge transaction and can stop cleanly between batches.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from novadb import dberrors, exit_codes
from novadb.archive.graph import PURGE_TIMESTAMP
from novadb.batching import DEFAULT_MAX_BYTES, Adaptation, Faults, GaveUp, StopWhen, row_sizes
from novadb.config import Settings
from novadb.connections import create_engine, mask
from novadb.dates import parse_before
from novadb.errors import AccessDenied, BadInput, DatabaseFault, NovaDbError
from novadb.fanout import CellTarget, cell_targets, run_cells
from novadb.locking import DEFAULT_TIMEOUT, HeldLock, database_lock
from novadb.progress import Event, Progress, ignore

LOCK_NAME = "archive"  # archive and purge never run together on one database


@dataclass(frozen=True)
class PurgeOptions:
    """What to purge (``before`` wins over ``purge_all``, as in nova-manage)."""

    before: datetime | None = None
    purge_all: bool = False
    all_cells: bool = False
    batch_size: int = 200000
    dry_run: bool = False
    workers: int = 4
    lock_timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_text(cls, *, before: str | None = None, **values: Any) -> PurgeOptions:
        """Options from CLI options or action params; a bad ``before`` is exit code 2."""
        return cls(
            before=parse_before(before, exit_code=exit_codes.PURGE_BAD_INPUT) if before else None,
            **values,
        )

    def validate(self) -> None:
        """Exit 1 without --before or --all (nova-manage's code); 2 for a bad batch size."""
        if self.before is None and not self.purge_all:
            raise BadInput(
                "Either --before or --all is required", exit_code=exit_codes.PURGE_NO_SCOPE
            )
        if self.batch_size < 1:
            raise BadInput("--batch-size must be a positive integer, e.g. --batch-size 10000")


@dataclass
class CellPurge:
    """Rows deleted (or, in a dry run, to delete) per shadow table of one cell."""

    name: str
    identity: str
    rows: dict[str, int] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    stopped: str | None = None
    retries: int = 0
    halvings: int = 0
    reconnects: int = 0


@dataclass
class PurgeResult:
    """Rows per shadow table (``<cell>.`` prefixed with --all-cells)."""

    rows: dict[str, int]
    total: int
    elapsed: float
    dry_run: bool
    stopped: str | None
    messages: list[str]
    cells: list[CellPurge]
    retries: int = 0  # windows run again after a conflict
    halvings: int = 0  # windows halved because the server refused their size
    reconnects: int = 0  # lost connections the run resumed from

    @property
    def exit_code(self) -> int:
        """nova-manage's: 0 when rows were deleted (or would be, in a dry run), 3 when none."""
        return exit_codes.PURGE_DELETED if self.total else exit_codes.PURGE_NOTHING


def timestamp_column(table: sa.Table) -> str | None:
    """The column that dates a shadow row under Nova's rule, or None."""
    if table.name in PURGE_TIMESTAMP:
        return PURGE_TIMESTAMP[table.name]
    for name in ("deleted_at", "updated_at", "created_at"):
        if name in table.c:
            return name
    return None


def _shadow_tables(conn: Connection) -> list[sa.Table]:
    names = sorted(n for n in sa.inspect(conn).get_table_names() if n.startswith("shadow_"))
    meta = sa.MetaData()
    meta.reflect(conn, only=names)
    return [meta.tables[n] for n in names]


class _CellPurge:
    def __init__(
        self, engine: Engine, cell: CellTarget, options: PurgeOptions, progress: Progress,
        stop: StopWhen,
    ) -> None:  # fmt: skip
        self.engine = engine
        self.options = options
        self.progress = progress
        self.stop = stop
        self.result = CellPurge(cell.name, cell.identity)
        self.sizes: dict[str, tuple[int, int]] = {}
        self.adapted = Adaptation()
        self.faults = Faults(stop, self.adapted, on_retry=self._retried)
        self.held = HeldLock()
        self.deleted = 0

    def run(self) -> CellPurge:
        try:
            with database_lock(
                self.engine, LOCK_NAME, self.options.lock_timeout, progress=self.progress
            ) as held:
                self.held = held
                tables = self.faults.call(self._prepare)
                for table in tables:
                    reason = self.stop.reason()
                    if reason is not None:
                        self.result.stopped = reason
                        break
                    self._table(table)
        except GaveUp as exc:
            raise DatabaseFault(
                f"purge of {mask(self.engine.url)} stopped: {exc.describe()}. "
                f"{self._done_so_far()}; every window is one transaction, so nothing is "
                "half-deleted. Run the same command again (on any node of the cluster) to finish"
            ) from exc.cause
        except DBAPIError as exc:
            lacking = dberrors.privilege_problem(exc)
            if lacking is not None:
                raise AccessDenied(
                    f"purge of {mask(self.engine.url)} stopped: {lacking}; "
                    f"{self._done_so_far()}. Grant it (purge needs SELECT and DELETE on the "
                    "shadow tables) and run again"
                ) from exc
            raise DatabaseFault(
                f"purge of {mask(self.engine.url)} stopped on a database error "
                f"{dberrors.message(exc)}; {self._done_so_far()}; nothing is half-deleted. "
                "Fix the cause and run the same command again"
            ) from exc
        finally:
            self.result.retries = self.adapted.retries
            self.result.halvings = self.adapted.halvings
            self.result.reconnects = self.adapted.reconnects + self.held.reacquired
        return self.result

    def _prepare(self) -> list[sa.Table]:
        with self.engine.connect() as conn:
            tables = _shadow_tables(conn)
            self.sizes = row_sizes(conn, [t.name for t in tables])
        return tables

    def _done_so_far(self) -> str:
        total = sum(self.result.rows.values()) + self.deleted
        return f"{total} rows deleted before that" if total else "nothing was deleted before that"

    def _retried(self, kind: str, exc: BaseException) -> None:
        what = "reconnecting" if kind == "lost" else "retrying a window"
        self.progress(Event(
            "purge", "retry", f"{self.result.name}: {what}: {dberrors.message(exc)}",
            {"cell": self.result.name, "kind": kind},
        ))  # fmt: skip

    def _condition(self, table: sa.Table) -> tuple[Any, str] | None:
        if self.options.before is None:
            return sa.true(), "(n/a)"
        column = timestamp_column(table)
        if column is None:
            self.result.messages.append(
                f"{self.result.identity}: Unable to purge table {table.name} because it has "
                "no timestamp column"
            )
            return None
        return table.c[column] < self.options.before, column

    def _table(self, table: sa.Table) -> None:
        found = self._condition(table)
        if found is None:
            return
        where, column = found
        if self.options.dry_run:
            query = sa.select(sa.func.count()).select_from(table).where(where)
            count = int(self.faults.call(lambda: self._scalar(query)) or 0)
        else:
            count = self._delete(table, where)
        if count:
            self.result.rows[table.name] = count
            self.result.columns[table.name] = column
            verb = "Would delete" if self.options.dry_run else "Deleted"
            self.result.messages.append(
                f"{self.result.identity}: {verb} {count} rows from {table.name} based on "
                f"timestamp column {column}"
            )

    def _delete(self, table: sa.Table, where: Any) -> int:
        """Delete in windows of ``batch_size`` consecutive primary-key values.

        Each window is one ``DELETE ... WHERE id >= lo AND id < lo + n AND
        <timestamp rule>``: a primary-key range scan, bounded in rows, with
        no second pass to find the window's end.  The next window starts at
        the first matching id after it (one index seek), so sparse ids cost
        nothing.
        """
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, sa.Integer):
            return self.faults.call(lambda: self._run(sa.delete(table).where(where)))
        key = pk[0]
        size = self.options.batch_size
        avg = self.sizes.get(table.name, (0, 0))[1]
        if avg:  # keep a window's rows under the cluster's transaction size limit
            size = max(1, min(size, DEFAULT_MAX_BYTES // avg))
        self.deleted = 0
        low: int = -1
        # The last matching id now: windows stop there (archive, the only
        # other writer of shadow tables, waits for the same lock).
        top = self.faults.call(lambda: self._scalar(sa.select(sa.func.max(key)).where(where)))
        while top is not None and low < top:
            if self.stop.reason() is not None:
                self.result.stopped = self.stop.reason()
                return self.deleted
            self.held.verify()
            try:
                found = self.faults.call(
                    lambda a=low, n=size: self._window(table, key, where, a, n)
                )
            except DBAPIError as exc:
                if not dberrors.is_too_big(exc) or size == 1:
                    raise
                size = max(1, size // 2)
                self.adapted.halvings += 1
                continue
            if found is None:
                return self.deleted
            low, n = found
            self.deleted += n
            self.progress(Event(
                "purge", "batch",
                f"{self.result.name}: {table.name}: {n} rows (total {self.deleted})",
                {"cell": self.result.name, "table": table.name, "rows": n,
                 "total": self.deleted, "retries": self.adapted.retries,
                 "halvings": self.adapted.halvings, "reconnects": self.adapted.reconnects},
            ))  # fmt: skip
        return self.deleted

    def _scalar(self, query: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def _window(
        self, table: sa.Table, key: Any, where: Any, after: int, size: int
    ) -> tuple[int, int] | None:
        """Delete the next window in one transaction; (its last id, rows) or None when done.

        Safe to run again after a lost connection: a window that did commit
        is simply gone, and the next one starts after the ids still there.
        """
        with self.engine.begin() as conn:
            low = conn.execute(sa.select(sa.func.min(key)).where(where, key > after))
            start = low.scalar()
            if start is None:
                return None
            statement = sa.delete(table).where(where, key >= start, key < start + size)
            return int(start) + size - 1, int(conn.execute(statement).rowcount)

    def _run(self, statement: sa.Delete) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(statement).rowcount)


def purge_cell(
    engine: Engine,
    options: PurgeOptions,
    *,
    cell: CellTarget | None = None,
    progress: Progress = ignore,
    stop: threading.Event | None = None,
) -> CellPurge:
    """Purge one cell database's shadow tables."""
    options.validate()
    target = cell or CellTarget("main", str(engine.url), "DB")
    return _CellPurge(engine, target, options, progress, StopWhen.after(None, stop)).run()


def purge(
    settings: Settings,
    options: PurgeOptions,
    *,
    progress: Progress = ignore,
    stop: threading.Event | None = None,
) -> PurgeResult:
    """Purge the local cell database, or every cell with ``all_cells``."""
    options.validate()
    started = time.monotonic()
    api_engine = None
    if options.all_cells:
        try:
            api_engine = create_engine(settings.url("api"))
        except NovaDbError as exc:
            raise NovaDbError(
                f"Unable to get cell list from API DB. Is it configured? ({exc})",
                exit_code=exit_codes.PURGE_NO_CELL_LIST,
            ) from exc
    try:
        cells = cell_targets(settings, api_engine, all_cells=options.all_cells)
    finally:
        if api_engine is not None:
            api_engine.dispose()
    stop_when = StopWhen.after(None, stop)
    results = run_cells(
        cells,
        lambda cell, engine: _CellPurge(engine, cell, options, progress, stop_when).run(),
        workers=options.workers,
    )
    rows: dict[str, int] = {}
    for cell in results:
        for table, n in cell.rows.items():
            rows[f"{cell.name}.{table}" if options.all_cells else table] = n
    return PurgeResult(
        rows=rows,
        total=sum(rows.values()),
        elapsed=round(time.monotonic() - started, 3),
        dry_run=options.dry_run,
        stopped=next((c.stopped for c in results if c.stopped), None),
        messages=[m for c in results for m in c.messages],
        cells=results,
        retries=sum(c.retries for c in results),
        halvings=sum(c.halvings for c in results),
        reconnects=sum(c.reconnects for c in results),
    )
