"""``archive``: move soft-deleted rows, and every row that hangs off them, to shadow tables.

The end state matches Nova 34's ``archive_deleted_rows --until-complete`` (see
:mod:`novadb.archive.tree_sql` for what moves); the way there is different.  Each
table is walked once per pass by primary key (keyset, never OFFSET), and each
batch is one short transaction holding one INSERT...SELECT and one DELETE per
table of the tree, children first, with matching row counts.  Batches are
bounded by rows and by estimated bytes, retried on deadlocks and certification
failures, halved when the server says the transaction is too big, and checked
after a lost connection before being redone.

The API database's rows of archived instances (``instance_mappings``,
``request_specs``, ``instance_group_member``) go in the same batch.  When the
API database lives on the same MySQL server and the cell's user may write it
(the usual deployment), they are deleted in the cell batch's own transaction.
Otherwise they are deleted while the cell's transaction still holds the
instances and committed just before it; if the process dies in between, the
instances stay live and deleted and the next run archives them.  Either way
the end state is the same as an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from novadb import dberrors, exit_codes
from novadb.archive.drift import create_shadow_fix, describe, shadow_problems
from novadb.archive.graph import load_graph
from novadb.archive.joined import Chain, JoinedDelete, Step, fk_index
from novadb.archive.purge import PurgeOptions, purge
from novadb.archive.tree_sql import Criteria, Keys, Schema, Tree, would_move
from novadb.batching import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ROWS,
    Adaptation,
    Budget,
    Faults,
    GaveUp,
    Shrink,
    StopWhen,
    retrying,
    row_sizes,
)
from novadb.config import Settings
from novadb.connections import create_engine, mask
from novadb.dates import parse_before
from novadb.errors import (
    AccessDenied,
    BadInput,
    DatabaseFault,
    DatabaseUnreachable,
    NovaDbError,
)
from novadb.fanout import CellTarget, cell_targets, run_cells
from novadb.locking import DEFAULT_TIMEOUT, HeldLock, database_lock
from novadb.progress import Event, Progress, ignore

MAX_INT = 2147483647
MAX_PARALLEL = 8  # batches in flight per cell: each holds a connection and its locks
DEFAULT_BATCH_SIZE = 1000  # parent rows: nova-manage's --max_rows default
# An adaptive run sizes a tree's batches so that its backlog makes at least this
# many batches per batch in flight: enough to keep every connection busy.
BATCHES_PER_WORKER = 4
API_TABLES = ("instance_mappings", "request_specs", "instance_group_member")
LOCK_NAME = "archive"  # shared with purge: the two never run together on one database


@dataclass(frozen=True)
class ArchiveOptions:
    """What to archive and how (the CLI options and action params)."""

    batch_size: int | None = None  # None: DEFAULT_BATCH_SIZE, or sized by the bounds (below)
    until_complete: bool = False
    before: datetime | None = None
    task_log: bool = False
    all_cells: bool = False
    sleep: float = 0.0
    purge: bool = False
    max_runtime: float | None = None
    dry_run: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    workers: int = 4
    lock_timeout: float = DEFAULT_TIMEOUT
    parallel: int = 2

    before_text: str | None = None

    @property
    def parents(self) -> int:
        """Parent rows per batch to start from (and, without until_complete, per run)."""
        return DEFAULT_BATCH_SIZE if self.batch_size is None else self.batch_size

    @property
    def adaptive(self) -> bool:
        """Batches sized by the row and byte bounds, not a count of parents.

        Only a run to completion with no --batch-size: a single run keeps
        nova-manage's meaning (``--max_rows`` parent rows in all), and a given
        batch size is the operator's to keep.
        """
        return self.until_complete and self.batch_size is None

    @classmethod
    def from_text(cls, *, before: str | None = None, **values: Any) -> ArchiveOptions:
        """Options from CLI options or action params, ``before`` still as text.

        It is parsed by :meth:`resolved` after the batch size and the API
        database were checked: nova-manage's order of exit codes 2, 3, 4.
        """
        return cls(before_text=before or None, **values)

    def resolved(self) -> ArchiveOptions:
        """``before_text`` parsed as nova-manage parses it (a bad date: exit code 4)."""
        if self.before_text is None:
            return self
        return replace(
            self,
            before=parse_before(self.before_text, exit_code=exit_codes.ARCHIVE_BAD_DATE),
            before_text=None,
        )

    def validate(self) -> None:
        """Refuse values nova-manage refuses, with its exit code 2."""
        if self.batch_size is not None and self.batch_size < 1:
            raise BadInput("--batch-size must be a positive integer, e.g. --batch-size 1000")
        if self.batch_size is not None and self.batch_size > MAX_INT:
            raise BadInput(f"--batch-size must be <= {MAX_INT}")
        if not math.isfinite(self.sleep) or self.sleep < 0:
            raise BadInput("--sleep must be zero or a positive number of seconds")
        if self.max_runtime is not None and (
            not math.isfinite(self.max_runtime) or self.max_runtime <= 0
        ):
            raise BadInput("--max-runtime must be a positive number of seconds")
        if not math.isfinite(self.lock_timeout) or self.lock_timeout < 0:
            raise BadInput("the lock timeout must be zero or a positive number of seconds")
        if self.workers < 1:
            raise BadInput("workers must be at least 1")
        if not 1 <= self.parallel <= MAX_PARALLEL:
            raise BadInput(f"--parallel must be between 1 and {MAX_PARALLEL}, e.g. --parallel 1")


@dataclass
class CellArchive:
    """What one cell database gave up."""

    name: str
    url: str
    rows: dict[str, int] = field(default_factory=dict)
    api_rows: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    retries: int = 0
    halvings: int = 0
    reconnects: int = 0
    complete: bool = False
    stopped: str | None = None
    held_back: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


@dataclass
class ArchiveResult:
    """Rows per table (``<cell>.`` prefixed with --all-cells, ``API_DB.`` for the API DB)."""

    rows: dict[str, int]
    total: int
    batches: int  # committed transactions (a halved batch counts each half)
    complete: bool
    elapsed: float
    dry_run: bool
    stopped: str | None
    held_back: dict[str, int]
    failures: list[str]
    cells: list[CellArchive]
    purge: Any = None  # a PurgeResult when --purge ran
    retries: int = 0  # batches run again after a conflict
    halvings: int = 0  # batches split: too big for the server, or conflicting again and again
    reconnects: int = 0  # lost connections the run resumed from

    @property
    def exit_code(self) -> int:
        """nova-manage's: 1 while rows were archived (run again), 0 once nothing was.

        255 when a table failed (the other tables' rows still moved); a dry
        run moved nothing, so it is 0.
        """
        if self.failures:
            return exit_codes.ARCHIVE_TABLE_FAILED
        if self.total and not self.dry_run:
            return exit_codes.ARCHIVE_MOVED
        return exit_codes.ARCHIVE_NOTHING


class ShadowConflict(NovaDbError):
    """A shadow table already holds ids a batch would move there."""

    exit_code = exit_codes.ARCHIVE_TABLE_FAILED


class _Mismatch(Exception):
    """INSERT and DELETE counts differ: the rows changed under us; redo the batch."""


class _Blocked(Exception):
    """A row of the tree is referenced from a table archive does not move."""


def _is_redo(exc: BaseException) -> bool:
    return isinstance(exc, _Mismatch)


class _CellRun:
    """Archive one cell database: passes over its tables until done or told to stop."""

    def __init__(
        self,
        engine: Engine,
        api_engine: Engine | None,
        name: str,
        options: ArchiveOptions,
        progress: Progress,
        stop: StopWhen,
        budget: Budget,
    ) -> None:
        self.engine = engine
        self.api_engine = api_engine
        self.options = options
        self.progress = progress
        self.stop = stop
        self.budget = budget
        self.criteria = Criteria(options.before, options.task_log)
        self.result = CellArchive(name, mask(engine.url))
        self.sqlite = engine.dialect.name == "sqlite"
        self.api_tables: dict[str, sa.Table] = {}
        # API tables reachable from the cell's own connection (same MySQL server,
        # and the cell's user may write them): deleted in the batch's transaction.
        self.api_inline: dict[str, sa.TableClause] = {}
        # How a batch reaches each inline API table from its instances (built once).
        self.api_steps: dict[str, Step] = {}
        self.failed: set[str] = set()
        self.limits: dict[str, int] = {}
        self.sizes: dict[str, tuple[int, int]] = {}
        # (rows, root rows) committed per tree: the row bound's measure.
        self.moved_per_root: dict[str, tuple[int, int]] = {}
        self.max_rows = DEFAULT_MAX_ROWS
        self.max_bytes = options.max_bytes
        self.grown: set[str] = set()  # trees an adaptive run has sized from their backlog
        self.adapted = Adaptation()
        self.faults = Faults(stop, self.adapted, on_retry=self._retried)
        self.held: HeldLock = HeldLock()
        # Batches in flight, and the engine they run on: chosen by
        # _inspect_server once the server is known.
        self.parallel = 1
        self.batch_engine = engine
        self._mutex = threading.Lock()  # the counts batches update from their threads

    # -- the run -----------------------------------------------------------
    def run(self) -> CellArchive:
        try:
            with database_lock(
                self.engine, LOCK_NAME, self.options.lock_timeout, progress=self.progress
            ) as held:
                self.held = held
                self._run()
        except GaveUp as exc:
            raise DatabaseFault(self._gave_up(exc)) from exc.cause
        except DBAPIError as exc:
            raise self._database_error(exc) from exc
        finally:
            self._sync_counts()
        return self.result

    def _run(self) -> None:
        schema = self.faults.call(self._prepare)
        if not self.options.dry_run:
            self._passes(schema)
        # Only a table something unmovable references can hold rows back.
        for name in (t for t in schema.graph.tables if schema.blockers.get(t)):
            if name in self.failed:
                continue
            query = schema.tree(name, self.criteria).held_back()
            held = self.faults.call(lambda q=query: self._scalar(q))
            if held:
                self.result.held_back[name] = int(held)

    def _prepare(self) -> Schema:
        """Read the schema, check the shadow tables; --dry-run counts too (redone on faults)."""
        self.failed.clear()
        self.result.failures.clear()
        with self.engine.connect() as conn:
            inspector = sa.inspect(conn)
            schema = Schema(conn, load_graph(conn, inspector), inspector)
            self.sizes = row_sizes(conn, [*schema.graph.tables])
            self._inspect_server(conn)
            if self.api_engine is not None:
                api_meta = sa.MetaData()
                with self.api_engine.connect() as aconn:
                    api_meta.reflect(aconn, only=list(API_TABLES))
                self.api_tables = {t: api_meta.tables[t] for t in API_TABLES}
                self.api_inline = self._same_server(conn)
                instances = schema.live.get("instances")
                self.api_steps = {
                    name: Step(table, table.c.instance_uuid == instances.c.uuid,
                               fk_index(self.api_tables[name], "instance_uuid"))
                    for name, table in self.api_inline.items()
                } if instances is not None else {}  # fmt: skip
            self._check_shadows(conn, schema)
            if self.options.dry_run:
                self.result.rows.clear()
                self._dry_run(conn, schema)
        return schema

    def _inspect_server(self, conn: Connection) -> None:
        """How batches run on this server (see :func:`batch_mode`), and its write-set bounds."""
        if conn.dialect.name != "mysql":
            return
        self._galera_bounds(conn)
        log_bin, binlog_format = conn.exec_driver_sql("SELECT @@log_bin, @@binlog_format").one()
        isolation, self.parallel = batch_mode(bool(int(log_bin or 0)), str(binlog_format),
                                              self.options)  # fmt: skip
        if isolation is not None:
            self.batch_engine = self.engine.execution_options(isolation_level=isolation)

    def _galera_bounds(self, conn: Connection) -> None:
        """Keep a batch's write set under the cluster's limits (each row moved: two changes)."""
        names = ("wsrep_on", "wsrep_max_ws_rows", "wsrep_max_ws_size")
        found = {
            str(name).lower(): str(value)
            for name, value in conn.execute(
                sa.text("SHOW VARIABLES WHERE Variable_name IN :names").bindparams(
                    sa.bindparam("names", names, expanding=True)
                )
            )
        }
        if found.get("wsrep_on", "OFF").upper() != "ON":
            return
        rows = int(found.get("wsrep_max_ws_rows") or 0)
        size = int(found.get("wsrep_max_ws_size") or 0)
        # Each moved row is an insert and a delete in the write set: half of
        # each limit, less a margin for the batch's API rows.
        if rows > 0:
            self.max_rows = max(1, min(self.max_rows, rows * 2 // 5))
        if size > 0:
            self.max_bytes = max(1, min(self.max_bytes, size * 2 // 5))

    def _scalar(self, query: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def _sync_counts(self) -> None:
        self.result.retries = self.adapted.retries
        self.result.halvings = self.adapted.halvings
        self.result.reconnects = self.adapted.reconnects + self.held.reacquired

    def _done_so_far(self) -> str:
        total = sum(self.result.rows.values())
        return (
            f"{total} rows archived in {self.result.batches} batches before that"
            if total
            else "nothing was archived before that"
        )

    def _gave_up(self, exc: GaveUp) -> str:
        return (
            f"archive of {self.result.url} stopped: {exc.describe()}. "
            f"{self._done_so_far()}; nothing is lost or half-moved (every batch is one "
            "transaction). Run the same command again (on any node of the cluster) to finish"
        )

    def _database_error(self, exc: DBAPIError) -> NovaDbError:
        """A database error no retry fixes, as one line that says what to do."""
        lacking = dberrors.privilege_problem(exc)
        if lacking is not None:
            return AccessDenied(
                f"archive of {self.result.url} stopped: {lacking}; nothing was changed by the "
                f"failing statement ({self._done_so_far()}). Grant it (archive needs SELECT, "
                "INSERT and DELETE on the cell's tables and their shadow tables) and run again"
            )
        return DatabaseFault(
            f"archive of {self.result.url} stopped on a database error "
            f"{dberrors.message(exc)}; {self._done_so_far()}; nothing is lost or half-moved "
            "(every batch is one transaction). Fix the cause and run the same command again"
        )

    def _dry_run(self, conn: Connection, schema: Schema) -> None:
        for name, query in would_move(schema, self.criteria, frozenset(self.failed)).items():
            count = int(conn.execute(query).scalar() or 0)
            if count:
                self.result.rows[name] = count
        if self.result.rows.get("instances") and self.api_tables:
            self.result.api_rows = self._count_api_rows(conn, schema)
        self.result.complete = not self.failed

    def _count_api_rows(self, conn: Connection, schema: Schema) -> dict[str, int]:
        """API rows of the instances a real run would archive, 1000 uuids at a time."""
        assert self.api_engine is not None
        tree = schema.tree("instances", self.criteria)
        live = schema.live["instances"]
        counts: dict[str, int] = dict.fromkeys(API_TABLES, 0)
        after = 0
        with self.api_engine.connect() as aconn:
            while True:
                rows = conn.execute(
                    sa.select(live.c.id, live.c.uuid)
                    .where(tree.eligible(), live.c.id > after)
                    .order_by(live.c.id)
                    .limit(1000)
                ).all()
                if not rows:
                    return counts
                after = int(rows[-1][0])
                uuids = [r[1] for r in rows if r[1] is not None]
                for name in API_TABLES:
                    table = self.api_tables[name]
                    query = sa.select(sa.func.count()).where(table.c.instance_uuid.in_(uuids))
                    counts[name] += int(aconn.execute(query).scalar() or 0)

    def _passes(self, schema: Schema) -> None:
        while True:
            moved = self._one_pass(schema)
            if self.result.stopped:
                return
            if not self.options.until_complete:
                self.result.complete = not self.budget.exhausted and self.faults.call(
                    lambda: self._nothing_left(schema)
                )
                return
            if moved == 0:
                self.result.complete = not self.failed
                return

    def _nothing_left(self, schema: Schema) -> bool:
        with self.engine.connect() as conn:
            for name in schema.graph.tables:
                if name in self.failed:
                    return False
                if conn.execute(schema.tree(name, self.criteria).candidates(0, 1)).first():
                    return False
        return True

    def _check_shadows(self, conn: Connection, schema: Schema) -> None:
        """Fail every tree that a shadow table would make fail, before anything moves.

        A missing shadow table fails its own table and every tree whose rows
        would take its rows along; a shadow table whose columns would fail
        the copy (see :mod:`novadb.archive.drift`) fails every tree it is in.
        """
        graph = schema.graph
        mysql = conn.dialect.name == "mysql"
        for name in graph.missing:
            fix = create_shadow_fix(name, mysql)
            self._fail(name, f"shadow_{name} is missing, so nothing moved from {name}. "
                       f"Create it ({fix}) and archive again")  # fmt: skip
        problems = shadow_problems(conn, graph.tables)
        for name in graph.tables:
            tree = schema.tree(name, self.criteria)
            missing = graph.missing_below(name)
            found = [p for t in tree.tables for p in problems.get(t, [])]
            if missing:
                tables = ", ".join(f"shadow_{t}" for t in missing)
                self._fail(name, f"{tables} missing: {name} rows take their "
                           f"{', '.join(missing)} rows with them, so nothing moved from {name}. "
                           f"Create {'them' if len(missing) > 1 else 'it'} ("
                           + "; ".join(create_shadow_fix(t, mysql) for t in missing)
                           + ") and archive again")  # fmt: skip
            elif found and all(p.lacks for p in found):
                self._fail(name, f"{describe(found)}; nothing moved from {name}. Run "
                           "`novadb sync` (or add the columns to the shadow tables) and "
                           "archive again")  # fmt: skip
            elif found:
                self._fail(name, f"{describe(found)}; nothing moved from {name}. Fix the "
                           f"shadow table(s) ({'; '.join(p.fix for p in found)}) and archive "
                           "again")  # fmt: skip

    def _one_pass(self, schema: Schema) -> int:
        moved = 0
        for name in schema.graph.tables:
            if name in self.failed:
                continue
            moved += self._walk(schema.tree(name, self.criteria))
            if self.result.stopped:
                break
        return moved

    def _fail(self, table: str, message: str) -> None:
        with self._mutex:
            self.failed.add(table)
            self.result.failures.append(f"{self.result.name}: {table}: {message}")
        # Reported once, by the caller, as an error; the event is for live logs.
        self.progress(Event("archive", "failure", f"{self.result.name}: {table}: {message}"))

    def _limit(self, tree: Tree) -> int:
        """Parent rows per batch: the batch size, lowered to keep under the row and byte bounds.

        The byte bound comes from the server's statistics (and shrinks when a
        batch turns out bigger, or the server refuses one); the row bound from
        the rows per parent the tree's batches have moved so far in this run,
        or the statistics' estimate before the first batch.  ``--batch-size``
        stays the most parent rows a batch takes; without it, a run to
        completion grows the count once it knows a tree's backlog (:meth:`_grow`).
        """
        if tree.root not in self.limits:
            self.limits[tree.root] = self._under_bytes(tree, self.options.parents)
        limit = self.limits[tree.root]
        rows, roots = self.moved_per_root.get(tree.root, (0, 0))
        per_root = rows / roots if roots else self._rows_per_root(tree)
        if per_root > 0:
            limit = max(1, min(limit, int(self.max_rows / per_root)))
        return limit

    def _under_bytes(self, tree: Tree, limit: int) -> int:
        """``limit`` parent rows, fewer if their estimated bytes would pass the byte bound."""
        per_root = self._bytes_per_root(tree)
        if per_root:
            limit = max(1, min(limit, self.max_bytes // per_root))
        return limit

    def _grow(self, tree: Tree, full: bool) -> None:
        """Size an adaptive run's batches once a tree's first batch comes back full.

        The backlog is split into BATCHES_PER_WORKER batches per batch in
        flight (enough to keep every connection busy), each as large as the
        bounds allow (:meth:`_limit` applies the row bound).  A tree whose
        first batch is not full fits in it and is never counted: most trees
        hold a handful of rows, and a count each would cost more than they do.
        """
        if not self.options.adaptive or not full or tree.root in self.grown:
            return
        self.grown.add(tree.root)
        split = BATCHES_PER_WORKER * self.parallel
        cap = MAX_INT // 4
        per_root = self._rows_per_root(tree)
        if per_root > 0:
            cap = int(self.max_rows / per_root) * split
        root = tree.schema.live[tree.root]
        found = sa.select(root.c.id).where(tree.eligible()).limit(cap).subquery()
        query = sa.select(sa.func.count()).select_from(found)
        backlog = int(self.faults.call(lambda: self._scalar(query)) or 0)
        target = self._under_bytes(tree, backlog // split)
        with self._mutex:
            if target > self.limits.get(tree.root, 0):
                self.limits[tree.root] = target

    def _rows_per_root(self, tree: Tree) -> float:
        """Rows of the whole tree per root row, from the server's statistics (MySQL)."""
        if not self.sizes:
            return 0.0
        root_rows = max(self.sizes.get(tree.root, (0, 0))[0], 1)
        return 1.0 + sum(self.sizes.get(child, (0, 0))[0] / root_rows for child in tree.children)

    def _bytes_per_root(self, tree: Tree) -> int:
        if not self.sizes:
            return 0
        root_rows, root_avg = self.sizes.get(tree.root, (0, 0))
        total = float(root_avg)
        for child in tree.children:
            rows, avg = self.sizes.get(child, (0, 0))
            total += rows / max(root_rows, 1) * avg
        return int(total)

    def _candidates(self, tree: Tree, after: int, limit: int) -> list[int]:
        with self.engine.connect() as conn:
            return [int(r[0]) for r in conn.execute(tree.candidates(after, limit))]

    def _walk(self, tree: Tree) -> int:
        """Walk ``tree.root`` by primary key, with up to ``self.parallel`` batches in flight.

        The next batch's roots are chosen while earlier batches run, and each
        batch runs on its own connection.  Batches hold disjoint id ranges and
        their statements read only their own rows (see
        :mod:`novadb.archive.joined`), so they do not wait for each other; a
        deadlock that happens anyway is retried and counted like any other.
        """
        walk = _Walk(self, tree)
        with contextlib.ExitStack() as stack:
            pool: ThreadPoolExecutor | _InThisThread = _InThisThread()
            if self.parallel > 1:
                pool = stack.enter_context(
                    ThreadPoolExecutor(self.parallel, thread_name_prefix="novadb-archive")
                )
            # (One at a time runs in this thread, as every other operation does.)
            try:
                walk.run(pool)
            finally:
                # A batch already started runs to its end (it is one
                # transaction) before anything goes up, and is counted.
                walk.drain()
        return walk.moved

    def _record(self, tree: Tree, counts: dict[str, int]) -> None:
        """Count one committed transaction, and tell progress (from a batch's thread)."""
        with self._mutex:
            self._record_locked(tree, counts)

    def _record_locked(self, tree: Tree, counts: dict[str, int]) -> None:
        self._sync_counts()
        self.result.batches += 1
        for table, n in counts.items():
            if table.startswith("API_DB."):
                key = table.removeprefix("API_DB.")
                self.result.api_rows[key] = self.result.api_rows.get(key, 0) + n
            elif n:
                self.result.rows[table] = self.result.rows.get(table, 0) + n
        total = sum(self.result.rows.values())
        batch_rows = sum(v for k, v in counts.items() if not k.startswith("API_DB."))
        adapted = self.adapted.text()
        self.progress(Event(
            "archive", "batch",
            f"{self.result.name}: {tree.root}: {batch_rows} rows (total {total})"
            + (f"; {adapted}" if adapted else ""),
            {"cell": self.result.name, "table": tree.root, "rows": batch_rows,
             "total": total, "batches": self.result.batches,
             "retries": self.result.retries, "halvings": self.result.halvings,
             "reconnects": self.result.reconnects},
        ))  # fmt: skip
        if counts.get(tree.root):
            rows, roots = self.moved_per_root.get(tree.root, (0, 0))
            self.moved_per_root[tree.root] = (rows + batch_rows, roots + counts[tree.root])
        if self.sizes:
            actual = sum(n * self.sizes.get(t, (0, 0))[1] for t, n in counts.items())
            if actual > self.max_bytes:
                limit = self.limits.get(tree.root, self.options.parents)
                self.limits[tree.root] = max(1, limit * self.max_bytes // actual)

    # -- one batch ---------------------------------------------------------
    def _batch(self, tree: Tree, ids: list[int]) -> dict[str, int] | None:
        """Move one batch: retry conflicts and lost connections, split it when it must shrink.

        Returns the rows moved per table (each committed piece already
        recorded), or None when the tree failed.
        """
        pending = [False]  # the connection died around COMMIT: check before redoing
        try:
            counts = self.faults.call(
                lambda: self._attempt(tree, ids, pending),
                redo=_is_redo,
                shrinkable=len(ids) > 1,
            )
        except (_Blocked, ShadowConflict) as exc:
            self._fail(tree.root, str(exc))
            return None
        except Shrink:
            return self._halves(tree, ids, "conflicts kept hitting it")
        except DBAPIError as exc:
            if dberrors.is_shadow_value(exc):
                self._fail(tree.root, f"a shadow table cannot hold this batch's rows "
                           f"({dberrors.message(exc)}); nothing moved from {tree.root}. Run "
                           "`novadb check` to see how the shadow tables differ, fix them and "
                           "archive again")  # fmt: skip
                return None
            if not dberrors.is_too_big(exc):
                raise
            if len(ids) == 1:
                raise NovaDbError(
                    f"{tree.root} id {ids[0]}: its rows alone exceed the server's "
                    "transaction size limit; raise the limit (e.g. "
                    "group_replication_transaction_size_limit, wsrep_max_ws_rows, "
                    "wsrep_max_ws_size) and archive again",
                    exit_code=exit_codes.ARCHIVE_TABLE_FAILED,
                ) from exc
            return self._halves(tree, ids, f"the server refused its size: {dberrors.message(exc)}")
        if counts:
            self._record(tree, counts)
        return counts

    def _halves(self, tree: Tree, ids: list[int], why: str) -> dict[str, int] | None:
        half = len(ids) // 2
        with self._mutex:
            self.limits[tree.root] = max(1, half)
            self.adapted.halvings += 1
        self.progress(Event(
            "archive", "halving",
            f"{self.result.name}: {tree.root}: batch of {len(ids)} split in two ({why})",
        ))  # fmt: skip
        first = self._batch(tree, ids[:half])
        if first is None:
            return None
        second = self._batch(tree, ids[half:])
        if second is None:
            return None
        return dict(Counter(first) + Counter(second))

    def _retried(self, kind: str, exc: BaseException) -> None:
        what = "reconnecting" if kind == "lost" else "retrying a batch"
        self.progress(Event(
            "archive", "retry",
            f"{self.result.name}: {what}: {dberrors.message(exc)}",
            {"cell": self.result.name, "kind": kind},
        ))  # fmt: skip

    def _attempt(self, tree: Tree, ids: list[int], pending: list[bool]) -> dict[str, int]:
        """One try at a batch; after a lost connection, first find out whether it landed."""
        if pending[0]:
            landed = self._landed(tree, ids)
            pending[0] = False
            if landed is not None:
                return landed
        try:
            return self._batch_once(tree, ids)
        except DBAPIError as exc:
            if dberrors.is_lost_connection(exc):
                pending[0] = True
            raise

    def _landed(self, tree: Tree, ids: list[int]) -> dict[str, int] | None:
        """The batch's counts if it committed before the connection died, else None."""
        with self.engine.connect() as conn:
            live = sa.select(sa.func.count()).where(
                tree.schema.live[tree.root].c.id.in_(ids), tree.eligible()
            )
            if conn.execute(live).scalar():
                return None  # still live and eligible: it did not commit; redo it
            shadow = tree.schema.shadow[tree.root]
            found = [int(r[0]) for r in conn.execute(
                sa.select(shadow.c.id).where(shadow.c.id.in_(ids)))]  # fmt: skip
            keys = self._shadow_keys(conn, tree, found)
            return {
                name: int(conn.execute(q).scalar() or 0)
                for name, q in tree.shadow_counts(keys).items()
            }

    def _shadow_keys(self, conn: Connection, tree: Tree, ids: list[int]) -> Keys:
        shadow = tree.schema.shadow[tree.root]
        rows = conn.execute(
            sa.select(*(shadow.c[c] for c in tree.key_columns)).where(shadow.c.id.in_(ids))
        ).all()
        return tree.root_keys(rows)

    # One batch is one transaction, read top to bottom: lock the roots, expand
    # the tree, move table by table (each with its own failure handling),
    # delete the roots.  Splitting it would spread the transaction over helpers.
    def _batch_once(self, tree: Tree, ids: list[int]) -> dict[str, int]:  # noqa: C901
        counts: dict[str, int] = {}
        with self.batch_engine.connect() as conn, conn.begin():
            if self.sqlite:
                # Take SQLite's write lock first, so the rows checked below
                # cannot change before they move.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            rows = conn.execute(tree.lock(ids)).all()
            if not rows:
                return counts
            keys = tree.expand(conn, tree.root_keys(rows))
            if tree.root == "instances" and self.api_inline:
                # Joined through the batch's instances rows, so before they go.
                for name, statement in self._api_deletes(tree, keys):
                    counts[f"API_DB.{name}"] = conn.execute(statement).rowcount
            for move in tree.moves(keys):
                try:
                    inserted = conn.execute(move.insert).rowcount
                except IntegrityError as exc:
                    if dberrors.is_duplicate(exc):
                        raise self._conflict(tree, move.table, keys) from exc
                    raise
                try:
                    deleted = conn.execute(move.delete).rowcount
                except IntegrityError as exc:
                    if dberrors.is_foreign_key(exc):
                        raise _Blocked(
                            f"{move.table} rows of this batch are still referenced from a "
                            f"table archive does not move ({dberrors.errno(exc)}); nothing "
                            f"moved from {tree.root}. Run `novadb check` to see which rows"
                        ) from exc
                    raise
                if inserted != deleted:
                    raise _Mismatch(f"{move.table}: copied {inserted}, deleted {deleted}")
                if deleted:
                    counts[move.table] = deleted
            if tree.root == "instances" and self.api_tables and not self.api_inline:
                uuids = [u for u in keys[("instances", "uuid")] if u is not None]
                counts.update(self._delete_api_rows(uuids))
        return counts

    def _api_deletes(self, tree: Tree, keys: Keys) -> list[tuple[str, JoinedDelete]]:
        """DELETEs of the batch's API rows, joined from its instances (MySQL, same server)."""
        instances = tree.schema.live["instances"]
        ids = tuple(keys[("instances", "id")])
        return [
            (name, JoinedDelete(Chain(instances, (step,), ids)))
            for name, step in self.api_steps.items()
        ]

    def _same_server(self, conn: Connection) -> dict[str, sa.TableClause]:
        """The API tables as seen from the cell's connection, when it can write them.

        In most clouds nova, nova_api and the cells share one MySQL server and
        user; then the API rows go in the cell batch's own transaction: one
        commit, and cell and API change together or not at all.
        """
        assert self.api_engine is not None
        cell, api = self.engine.url, self.api_engine.url
        if self.engine.dialect.name != "mysql" or self.api_engine.dialect.name != "mysql":
            return {}
        same = (cell.host, cell.port, cell.username, cell.password) == (
            api.host, api.port, api.username, api.password,
        )  # fmt: skip
        if not same or not api.database or api.database == cell.database:
            return {}
        tables = {
            name: sa.table(name, sa.column("instance_uuid"), schema=api.database)
            for name in API_TABLES
        }
        try:
            with conn.begin_nested():
                for table in tables.values():
                    # A no-op write proves the privilege without changing anything.
                    conn.execute(sa.delete(table).where(sa.false()))
        except DBAPIError:
            return {}
        return tables

    def _conflict(self, tree: Tree, table: str, keys: Keys) -> ShadowConflict:
        with self.engine.connect() as conn:
            dup = [str(r[0]) for r in conn.execute(tree.duplicates(table, keys))]
        return ShadowConflict(
            f"shadow_{table} already holds id(s) {', '.join(dup) or '?'} that archive would "
            f"move from {table} (e.g. AUTO_INCREMENT reuse after a server restart, or rows "
            f"restored by hand); nothing was "
            f"moved or lost. Compare those rows; if the shadow copies are stale, delete them "
            f"from shadow_{table} (or `novadb purge --all`), then archive again"
        )

    def _delete_api_rows(self, uuids: list[str]) -> dict[str, int]:
        """Delete the API DB's rows of archived instances, committed before the cell's batch."""
        assert self.api_engine is not None
        out = {}
        for attempt in retrying():
            with attempt, self.api_engine.begin() as aconn:
                out = {}
                for name in API_TABLES:
                    table = self.api_tables[name]
                    result = aconn.execute(
                        sa.delete(table).where(table.c.instance_uuid.in_(uuids))
                    )
                    out[f"API_DB.{name}"] = result.rowcount
        return out


def batch_mode(
    log_bin: bool, binlog_format: str, options: ArchiveOptions
) -> tuple[str | None, int]:
    """A MySQL/MariaDB server's isolation level for batches, and the batches in flight.

    Under REPEATABLE READ, InnoDB locks the gaps around every row a batch
    reads, and batches side by side deadlock on each other's gaps.  Under
    READ COMMITTED a batch locks only its own rows; the rows it copies are
    read with ``FOR UPDATE``, so none can change between the copy and the
    DELETE, and a row inserted in between makes the counts differ (the batch
    is redone).  A server that writes a statement-based binary log refuses
    INSERT...SELECT under READ COMMITTED: there batches stay at the server's
    level (None), one at a time.  So does a run with ``--sleep``, which asks
    for a gentle run (a pause after each batch), and a run without
    ``until_complete`` (its parent-row budget is spent one batch at a time).
    """
    if log_bin and binlog_format.upper() == "STATEMENT":
        return None, 1
    # A single run spends a budget of parent rows that each batch reserves
    # and refunds when it ends: one batch at a time spends it exactly.
    gentle = options.sleep or not options.until_complete
    return "READ COMMITTED", 1 if gentle else options.parallel


class _InThisThread:
    """An executor that runs each batch at once, in the caller's thread."""

    def submit(
        self, work: Callable[[Tree, list[int]], dict[str, int] | None], tree: Tree, ids: list[int]
    ) -> Future[dict[str, int] | None]:
        future: Future[dict[str, int] | None] = Future()
        future.set_result(work(tree, ids))  # an error goes up from here, as it always did
        return future


class _Walk:
    """One walk of a tree: choose batches in the caller's thread, run them in a pool."""

    def __init__(self, run: _CellRun, tree: Tree) -> None:
        self.cell = run
        self.tree = tree
        self.moved = 0
        self.inflight: deque[tuple[Future[dict[str, int] | None], int]] = deque()

    def run(self, pool: ThreadPoolExecutor | _InThisThread) -> None:
        run, tree = self.cell, self.tree
        after = 0
        while True:
            while self.inflight and (
                len(self.inflight) >= run.parallel or self.inflight[0][0].done()
            ):
                if not self._settle():
                    return
            reason = run.stop.reason(progressed=run.result.batches > 0)
            if reason is not None:
                run.result.stopped = reason
                return
            limit = run.budget.reserve(run._limit(tree))
            if limit == 0:
                run.result.stopped = "budget"
                return
            try:
                ids = run.faults.call(lambda a=after, n=limit: run._candidates(tree, a, n))
                if ids:
                    run._grow(tree, full=len(ids) == limit)
                    # Never move a batch without the lock: another run may have
                    # it now.  (Checked here, not before each look for work:
                    # most looks find none.)
                    run.held.verify()
            except BaseException:
                run.budget.refund(limit)
                raise
            if not ids:
                run.budget.refund(limit)
                return
            after = ids[-1]
            self.inflight.append((pool.submit(run._batch, tree, ids), limit))
            if run.options.sleep:
                # A pause between batches (one in flight then): after this one.
                while self.inflight:
                    if not self._settle():
                        return
                run.stop.sleep(run.options.sleep)

    def drain(self) -> None:
        """Wait for every batch in flight; the first error among them goes up."""
        error: BaseException | None = None
        while self.inflight:
            try:
                self._settle()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the rest
                error = error or exc
        if error is not None:
            raise error

    def _settle(self) -> bool:
        """Account for the oldest batch in flight; False once its tree failed."""
        future, limit = self.inflight.popleft()
        counts = future.result()
        self.cell.budget.refund(limit - (counts or {}).get(self.tree.root, 0))
        if counts is None:  # the tree failed; _fail said why
            return False
        self.moved += sum(v for k, v in counts.items() if not k.startswith("API_DB."))
        return True


def archive_cell(
    engine: Engine,
    api_engine: Engine | None,
    options: ArchiveOptions,
    *,
    name: str = "main",
    progress: Progress = ignore,
    stop: threading.Event | None = None,
) -> CellArchive:
    """Archive one cell database (its API rows in ``api_engine``, when given)."""
    options.validate()
    options = options.resolved()
    budget = Budget(None if options.until_complete else options.parents)
    run = _CellRun(
        engine, api_engine, name, options, progress,
        StopWhen.after(options.max_runtime, stop), budget,
    )  # fmt: skip
    return run.run()


def archive(
    settings: Settings,
    options: ArchiveOptions,
    *,
    progress: Progress = ignore,
    stop: threading.Event | None = None,
) -> ArchiveResult:
    """Archive the local cell database, or every cell with ``all_cells``."""
    options.validate()
    started = time.monotonic()
    try:
        api_engine = create_engine(settings.url("api"))
    except DatabaseUnreachable as exc:
        raise DatabaseUnreachable(
            f"Failed to connect to API DB so aborting this archival attempt ({exc}). Check "
            "[api_database]/connection (or --api-database) and run this command again",
            exit_code=exit_codes.ARCHIVE_NO_API,
        ) from exc
    try:
        options = options.resolved()
        cells = cell_targets(settings, api_engine, all_cells=options.all_cells)
        stop_when = StopWhen.after(options.max_runtime, stop)
        budget = Budget(None if options.until_complete else options.parents)

        def one(cell: CellTarget, engine: Engine) -> CellArchive:
            return _CellRun(
                engine, api_engine, cell.name, options, progress, stop_when, budget
            ).run()

        results = run_cells(cells, one, workers=options.workers)
    finally:
        api_engine.dispose()
    result = _combine(results, options, time.monotonic() - started)
    if options.purge and result.total and not options.dry_run:
        result.purge = purge(
            settings,
            PurgeOptions(purge_all=True, all_cells=options.all_cells),
            progress=progress,
        )
    return result


def _combine(cells: list[CellArchive], options: ArchiveOptions, elapsed: float) -> ArchiveResult:
    prefix = options.all_cells
    rows: dict[str, int] = {}
    api: Counter[str] = Counter()
    held: dict[str, int] = {}
    failures: list[str] = []
    for cell in cells:
        for table, n in cell.rows.items():
            rows[f"{cell.name}.{table}" if prefix else table] = n
        for table, n in cell.held_back.items():
            held[f"{cell.name}.{table}" if prefix else table] = n
        api.update(cell.api_rows)
        for table in cell.api_rows:
            api.setdefault(table, 0)
        failures += cell.failures
    for table in sorted(api):
        rows[f"API_DB.{table}"] = api[table]
    total = sum(n for k, n in rows.items() if not k.startswith("API_DB."))
    stopped = next((c.stopped for c in cells if c.stopped), None)
    return ArchiveResult(
        rows=rows,
        total=total,
        batches=sum(c.batches for c in cells),
        complete=all(c.complete for c in cells),
        elapsed=round(elapsed, 3),
        dry_run=options.dry_run,
        stopped=stopped,
        held_back=held,
        failures=failures,
        cells=cells,
        retries=sum(c.retries for c in cells),
        halvings=sum(c.halvings for c in cells),
        reconnects=sum(c.reconnects for c in cells),
    )
