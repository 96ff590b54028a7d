"""Writing to the Placement database the way placement-api does, so both can run at once.

Placement's concurrency model is optimistic: a writer reads a provider's
(or consumer's) generation, and its write lands only if a compare-and-swap
``UPDATE ... SET generation = generation + 1 WHERE generation = <what I
read>`` still matches; a writer whose swap matches no row lost a race, rolls
back and starts again from a fresh read.

The contract novadb keeps with placement-api: every change novadb makes to a
provider's allocations, inventories or aggregates changes that provider's
generation, and every change to a consumer's allocations the consumer's, so
a placement-api request that read them before novadb wrote fails its swap
(409) and re-reads, and one that wrote in between makes novadb's batch fail
its own swap, roll back and be redone.  Set-based: one ``UPDATE`` per batch
whose ``WHERE`` carries each row's expected generation (a ``CASE`` on the
id), the batch redone unless every row matched.  The counts are not
Placement's: it bumps once per request (per consumer PUT, per aggregate
added) and not at all when allocations are only removed; novadb bumps once
per batch, removals included (``tests/integration/test_placement_generations.py``).

Rows are created as Placement creates them: standard resource classes with
Placement's fixed ids (their index in ``os_resource_classes.STANDARDS``),
standard traits from ``os_traits``, projects and users on first use,
``created_at``/``updated_at`` stamped in UTC.  Consumers get no consumer type:
Nova 34 writes allocations below microversion 1.38, where Placement leaves
the type NULL (new consumers) or as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timezone
from typing import TypeVar

import os_resource_classes as orc
import os_traits
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from novadb import dberrors, exit_codes
from novadb.batching import retrying
from novadb.connections import allow_zero_ids, is_sqlite, restore_sql_mode
from novadb.errors import NovaDbError
from novadb.locking import DEFAULT_TIMEOUT, database_lock

T = TypeVar("T")

MIN_CUSTOM_CLASS_ID = 10000
# Classes a Nova compute node's root provider reports and Nova can rebuild.
NOVA_ROOT_CLASSES = ("VCPU", "PCPU", "MEMORY_MB", "DISK_GB")
_CHUNK = 500


# One novadb Placement writer at a time (heal, sync-aggregates, audit --delete, rebuild,
# restore): Placement's generations keep us safe beside placement-api, this keeps two of
# our own runs from interleaving, as every novadb operation does.
WRITER_LOCK = "placement-writes"
WRITER_LOCK_TIMEOUT = DEFAULT_TIMEOUT  # seconds a second writer waits before giving up


def writer_lock(engine: Engine, *, held: bool = False) -> AbstractContextManager[object]:
    """The Placement writer lock, unless the caller (rebuild-placement) already holds it."""
    return nullcontext() if held else database_lock(engine, WRITER_LOCK, WRITER_LOCK_TIMEOUT)


class ConcurrentUpdate(NovaDbError):
    """Someone else changed a provider or consumer between our read and our write."""

    # heal-allocations' and sync-aggregates' code for a write that lost its races.
    exit_code = exit_codes.HEAL_FAILED


def utcnow() -> datetime:
    """Naive UTC, as Placement's oslo.db timestamps are stored."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class PlacementTables:
    """Placement's tables, reflected once per engine (the schema ``sync`` created)."""

    NAMES = (
        "allocations",
        "consumer_types",
        "consumers",
        "inventories",
        "placement_aggregates",
        "projects",
        "resource_classes",
        "resource_provider_aggregates",
        "resource_provider_traits",
        "resource_providers",
        "traits",
        "users",
    )

    def __init__(self, engine: Engine) -> None:
        meta = sa.MetaData()
        present = set(sa.inspect(engine).get_table_names())
        missing = [n for n in self.NAMES if n not in present]
        if missing:
            raise NovaDbError(
                f"the Placement database has no {', '.join(missing)} table; "
                "run `novadb sync --database placement` first"
            )
        meta.reflect(engine, only=list(self.NAMES))
        t = meta.tables
        self.allocations = t["allocations"]
        self.consumer_types = t["consumer_types"]
        self.consumers = t["consumers"]
        self.inventories = t["inventories"]
        self.aggregates = t["placement_aggregates"]
        self.projects = t["projects"]
        self.classes = t["resource_classes"]
        self.provider_aggregates = t["resource_provider_aggregates"]
        self.provider_traits = t["resource_provider_traits"]
        self.providers = t["resource_providers"]
        self.traits = t["traits"]
        self.users = t["users"]


def chunks(items: list[T], size: int = _CHUNK) -> Iterator[list[T]]:
    """Slices of at most ``size``, so ``IN`` lists and ``CASE`` stay small."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def write(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    attempts: int = 10,
    on_retry: Callable[[BaseException | None], None] | None = None,
) -> T:
    """Run ``work`` in one transaction; redo it after a lost race or a deadlock.

    ``work`` must read what it decides on inside the transaction it is given,
    so a redo starts from fresh generations.
    """

    def retry_on(exc: BaseException) -> bool:
        # A duplicate key means a row we saw missing was created meanwhile:
        # also a lost race, and a fresh read resolves it.
        return (
            isinstance(exc, ConcurrentUpdate)
            or dberrors.is_retryable(exc)
            or dberrors.is_duplicate(exc)
        )

    for attempt in retrying(attempts, retry_on=retry_on, on_retry=on_retry):
        with attempt, engine.begin() as conn:
            return work(conn)
    raise AssertionError("unreachable")  # pragma: no cover


def bump_generations(conn: Connection, table: sa.Table, expected: dict[int, int | None]) -> None:
    """Compare-and-swap ``generation + 1`` for every id, against the generation we read.

    Raises :class:`ConcurrentUpdate` (and the caller's transaction rolls back)
    unless every row still had the generation we read.  Ids are updated in
    order, so two of our writers never deadlock on each other.
    """
    now = utcnow()
    for part in chunks(sorted(expected)):
        seen = sa.case(
            {i: -1 if expected[i] is None else expected[i] for i in part}, value=table.c.id
        )
        statement = (
            sa.update(table)
            .where(table.c.id.in_(part), sa.func.coalesce(table.c.generation, -1) == seen)
            .values(generation=sa.func.coalesce(table.c.generation, 0) + 1, updated_at=now)
        )
        matched = conn.execute(statement).rowcount
        if matched != len(part):
            raise ConcurrentUpdate(
                f"{table.name}: {len(part) - matched} of {len(part)} rows changed under us "
                "(a concurrent placement-api write); retry the command"
            )


@contextmanager
def _zero_ids_allowed(conn: Connection) -> Iterator[None]:
    """Let MySQL store id 0 (VCPU's id) instead of treating it as 'next value'."""
    if is_sqlite(conn.engine.url):
        yield
        return
    mode = allow_zero_ids(conn)
    try:
        yield
    finally:
        restore_sql_mode(conn, mode)


def ensure_standard_classes(conn: Connection, tables: PlacementTables) -> int:
    """Insert the standard resource classes Placement would, with its ids; return how many."""
    have = {r[0] for r in conn.execute(sa.select(tables.classes.c.name))}
    now = utcnow()
    rows = [
        {"id": index, "name": name, "created_at": now}
        for index, name in enumerate(orc.STANDARDS)
        if name not in have
    ]
    if rows:
        with _zero_ids_allowed(conn):
            conn.execute(sa.insert(tables.classes), rows)
    return len(rows)


def ensure_standard_traits(conn: Connection, tables: PlacementTables) -> int:
    """Insert the ``os_traits`` traits the database lacks, as placement-api does at start."""
    have = {r[0] for r in conn.execute(sa.select(tables.traits.c.name))}
    now = utcnow()
    rows = [
        {"name": name, "created_at": now}
        for name in sorted(os_traits.get_traits())
        if name not in have
    ]
    if rows:
        conn.execute(sa.insert(tables.traits), rows)
    return len(rows)


def class_ids(conn: Connection, tables: PlacementTables) -> dict[str, int]:
    """Resource class name -> id, for every class the database knows."""
    query = sa.select(tables.classes.c.name, tables.classes.c.id)
    return {str(name): int(i) for name, i in conn.execute(query)}


def external_ids(conn: Connection, table: sa.Table, wanted: Iterable[str]) -> dict[str, int]:
    """``projects``/``users`` ids for Keystone ids, creating the missing rows."""
    names = sorted(set(wanted))
    found: dict[str, int] = {}
    for part in chunks(names):
        query = sa.select(table.c.external_id, table.c.id).where(table.c.external_id.in_(part))
        found.update({str(e): int(i) for e, i in conn.execute(query)})
    missing = [n for n in names if n not in found]
    if missing:
        now = utcnow()
        conn.execute(sa.insert(table), [{"external_id": n, "created_at": now} for n in missing])
        for part in chunks(missing):
            query = sa.select(table.c.external_id, table.c.id).where(table.c.external_id.in_(part))
            found.update({str(e): int(i) for e, i in conn.execute(query)})
    return found


def delete_empty_consumers(conn: Connection, tables: PlacementTables, uuids: list[str]) -> int:
    """Drop consumers left without allocations, as Placement does after a write."""
    removed = 0
    alloc = tables.allocations
    for part in chunks(uuids):
        statement = sa.delete(tables.consumers).where(
            tables.consumers.c.uuid.in_(part),
            ~sa.exists().where(alloc.c.consumer_id == tables.consumers.c.uuid),
        )
        removed += conn.execute(statement).rowcount
    return removed
