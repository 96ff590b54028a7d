"""The contract of an online data migration.

Each migration is idempotent, moves at most ``limit`` rows per call and says
what it saw: ``found`` (candidates looked at, migratable or not), ``done``
(rows it changed) and, for every candidate it could not change, the row's id
and why.  Unlike Nova's, each keeps a cursor (``state``) for the length of a
run, so rows that cannot be migrated are looked at once and never stop the
loop before the migratable rows behind them are done.

Writes are compare-and-swap updates (``... WHERE uuid IS NULL``) in short
transactions retried on deadlock, so they are safe while the cloud runs and
on a Galera cluster: a row someone else fixed meanwhile is simply not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Executable

from novadb.batching import retrying
from novadb.config import Settings


@dataclass(frozen=True)
class Unmigratable:
    """A row a migration cannot change, and why."""

    table: str
    id: str
    reason: str


@dataclass
class Outcome:
    """What one call of a migration saw and did.

    ``walked`` is for a migration that walks past rows it does not count as
    found (Nova's VIF walk looks at every live instance, counts those with a
    network cache): the rows it looked at.  The loop goes on while a call
    looked at anything (:attr:`seen`), not only while it found something.
    """

    found: int = 0
    done: int = 0
    unmigratable: list[Unmigratable] = field(default_factory=list)
    walked: int = 0

    @property
    def seen(self) -> int:
        """Rows the call looked at: those it walked past, or (most migrations) those it found."""
        return max(self.found, self.walked)

    def add(self, other: Outcome) -> None:
        """Add another call's counts to these (for callers that total several calls)."""
        self.found += other.found
        self.done += other.done
        self.walked += other.walked
        self.unmigratable += other.unmigratable


@dataclass
class Context:
    """What a migration may touch: one cell (or none), the API DB, Placement, the options."""

    settings: Settings
    main: Engine | None = None
    api: Engine | None = None
    placement: Engine | None = None
    cell_name: str = "main"
    # Cell databases for migrations that walk every cell from the API DB: (name, uuid, engine).
    cells: list[tuple[str, str, Engine]] = field(default_factory=list)
    _tables: dict[tuple[int, str], sa.Table] = field(default_factory=dict)

    def table(self, engine: Engine, name: str) -> sa.Table:
        """A reflected table, cached per engine."""
        key = (id(engine), name)
        if key not in self._tables:
            self._tables[key] = sa.Table(name, sa.MetaData(), autoload_with=engine)
        return self._tables[key]

    def option(self, section: str, name: str, default: str | None = None) -> str | None:
        """A nova.conf option (``[DEFAULT]cpu_allocation_ratio``, ...)."""
        return self.settings.option(section, name, default)


Func = Callable[[Context, int, dict[str, Any]], Outcome]


@dataclass(frozen=True)
class Migration:
    """One registered migration: Nova's name, the database it works on, its function.

    ``database`` is ``main`` (run once per cell database), ``api`` (run once;
    walks the cells itself) or ``placement``.
    """

    name: str
    database: str
    func: Func


def write(engine: Engine, work: Callable[[Connection], int]) -> int:
    """Run ``work`` in a short transaction, retried on deadlocks; return its row count."""
    for attempt in retrying():
        with attempt, engine.begin() as conn:
            return work(conn)
    raise AssertionError("unreachable")  # pragma: no cover


def next_page(engine: Engine, query: Executable, state: dict[str, Any]) -> list[Any]:
    """Run a candidate query (ordered by id, after the cursor) and move the cursor past it."""
    with engine.connect() as conn:
        rows = list(conn.execute(query).all())
    if rows:
        state["after"] = rows[-1].id
    return rows


def after(state: dict[str, Any], key: str = "after") -> Any:
    """The cursor a migration left in ``state`` (0 at the start of a run)."""
    return state.get(key, 0)
