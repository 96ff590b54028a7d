"""Data that would make a pending schema migration fail.

Nova's "Enforce unique instance uuid" rule and Placement's two blocker revisions
(611cd6dffd7b, b5c396305c25) refuse to migrate while certain rows exist.  novadb
runs every check of every pending revision *before* any DDL, so a sync either
migrates everything or touches nothing, and the error says what to run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from novadb.errors import BlockerFound
from novadb.schema.revision_helpers import is_offline

SHOWN_IDS = 5


@dataclass(frozen=True)
class Finding:
    """Rows that block a revision: where, how many, the first ids, the fix."""

    revision: str
    table: str
    problem: str
    count: int
    first_ids: tuple[object, ...]
    fix: str

    def describe(self, where: str) -> str:
        """One sentence: where, what, which ids, and the command that fixes it."""
        ids = ", ".join(map(str, self.first_ids))
        return (
            f"{where}: {self.count} {self.table} row(s) {self.problem} "
            f"(first ids: {ids}); run `{self.fix}`"
        )


def _sample(
    conn: Connection,
    id_col: sa.ColumnElement[object],
    where: sa.ColumnElement[bool],
    frm: sa.FromClause,
) -> tuple[int, tuple[object, ...]]:
    """Count the offending rows and fetch the first few ids."""
    count = conn.execute(sa.select(sa.func.count()).select_from(frm).where(where)).scalar_one()
    if not count:
        return 0, ()
    ids = (
        conn.execute(
            sa.select(id_col).select_from(frm).where(where).order_by(id_col).limit(SHOWN_IDS)
        )
        .scalars()
        .all()
    )
    return int(count), tuple(ids)


def _has_tables(conn: Connection, *names: str) -> bool:
    """A database still being created has no rows to block anything."""
    inspector = sa.inspect(conn)
    return all(inspector.has_table(name) for name in names)


def _null_root_provider(conn: Connection) -> Finding | None:
    if not _has_tables(conn, "resource_providers"):
        return None
    rp = sa.table("resource_providers", sa.column("id"), sa.column("root_provider_id"))
    count, ids = _sample(conn, rp.c.id, rp.c.root_provider_id.is_(None), rp)
    if not count:
        return None
    return Finding(
        "611cd6dffd7b",
        "resource_providers",
        "have root_provider_id NULL",
        count,
        ids,
        "novadb online-migrate --database placement",
    )


def _allocation_without_consumer(conn: Connection) -> Finding | None:
    if not _has_tables(conn, "allocations", "consumers"):
        return None
    alloc = sa.table("allocations", sa.column("id"), sa.column("consumer_id"))
    consumers = sa.table("consumers", sa.column("uuid"))
    frm = alloc.outerjoin(consumers, alloc.c.consumer_id == consumers.c.uuid)
    count, ids = _sample(conn, alloc.c.id, consumers.c.uuid.is_(None), frm)
    if not count:
        return None
    return Finding(
        "b5c396305c25",
        "allocations",
        "have no consumers record",
        count,
        ids,
        "novadb online-migrate --database placement",
    )


def _null_instance_uuid(conn: Connection) -> Finding | None:
    if not _has_tables(conn, "instances"):
        return None
    instances = sa.table("instances", sa.column("id"), sa.column("uuid"))
    count, ids = _sample(conn, instances.c.id, instances.c.uuid.is_(None), instances)
    if not count:
        return None
    return Finding(
        "legacy",
        "instances",
        "have uuid NULL",
        count,
        ids,
        "novadb null-instance-uuid-scan --delete",
    )


Check = Callable[[Connection], "Finding | None"]

# Checks keyed by the revision they guard; "legacy" guards the takeover of a
# sqlalchemy-migrate database (Nova's 267 "Enforce unique instance uuid").
CHECKS: dict[str, dict[str, Check]] = {
    "placement": {
        "611cd6dffd7b": _null_root_provider,
        "b5c396305c25": _allocation_without_consumer,
    },
    "main": {"legacy": _null_instance_uuid},
    "api": {},
}


def find_blockers(conn: Connection, environment: str, revisions: list[str]) -> list[Finding]:
    """Run the checks guarding ``revisions`` (and ``legacy``) on ``conn``."""
    findings = []
    for revision, check in CHECKS[environment].items():
        if revision in revisions:
            finding = check(conn)
            if finding is not None:
                findings.append(finding)
    return findings


def check_blocker(revision: str) -> None:
    """Called from a blocker revision: raise if its data check fails."""
    if is_offline():
        return
    for environment in CHECKS.values():
        check = environment.get(revision)
        if check is not None:
            finding = check(op.get_bind())
            if finding is not None:
                raise BlockerFound(finding.describe("this database"))
