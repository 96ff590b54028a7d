"""``null-instance-uuid-scan``: rows that belong to no instance.

Nova's "Enforce unique instance uuid" migration (legacy 267) refuses to run
while ``instances.uuid`` or any ``instance_uuid`` column is NULL.  The scan lists
such rows per table in every cell database (``fixed_ips`` excepted: a NULL
there is an unallocated address), and ``delete=True`` removes them, one
transaction per database, children first.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from novadb import exit_codes
from novadb.config import Settings
from novadb.connections import engine_for, mask
from novadb.progress import Event, Progress, ignore
from novadb.targets import plan

EXCLUDED = {"fixed_ips", "shadow_fixed_ips"}


@dataclass(frozen=True)
class NullUuidDatabase:
    """Rows with a NULL instance uuid in one database, per table."""

    name: str
    url: str
    rows: dict[str, int]


@dataclass(frozen=True)
class NullUuidResult:
    """What the scan found (and, with ``deleted``, removed)."""

    databases: tuple[NullUuidDatabase, ...]
    deleted: bool

    @property
    def total(self) -> int:
        """Rows found over every database and table."""
        return sum(sum(d.rows.values()) for d in self.databases)

    @property
    def exit_code(self) -> int:
        """1 when rows were found and left (nova-manage's), 0 when none or deleted."""
        return exit_codes.NULL_UUID_FOUND if self.total and not self.deleted else exit_codes.OK


def _null_column(table: sa.Table) -> sa.Column[object] | None:
    if table.name in ("instances", "shadow_instances"):
        return table.c.get("uuid")
    return table.c.get("instance_uuid")


def _scan_one(conn: Connection, delete: bool) -> dict[str, int]:
    meta = sa.MetaData()
    meta.reflect(conn)
    counts: dict[str, int] = {}
    # Children before parents, so a delete never trips a foreign key.
    for table in reversed(meta.sorted_tables):
        column = _null_column(table)
        if table.name in EXCLUDED or column is None:
            continue
        where = column.is_(None)
        if delete:
            if table.name == "instance_actions" and "instance_actions_events" in meta.tables:
                events = meta.tables["instance_actions_events"]
                orphan_actions = sa.select(table.c.id).where(where)
                n = conn.execute(
                    sa.delete(events).where(events.c.action_id.in_(orphan_actions))
                ).rowcount
                if n:
                    counts["instance_actions_events"] = (
                        counts.get("instance_actions_events", 0) + n
                    )
            found = conn.execute(sa.delete(table).where(where)).rowcount
        else:
            found = conn.execute(
                sa.select(sa.func.count()).select_from(table).where(where)
            ).scalar_one()
        if found:
            counts[table.name] = counts.get(table.name, 0) + int(found)
    return counts


def null_instance_uuid_scan(
    settings: Settings, *, delete: bool = False, progress: Progress = ignore
) -> NullUuidResult:
    """Count (or delete) rows whose instance uuid is NULL in every cell database."""
    out = []
    for target in plan(settings, "main"):
        with engine_for(target.url) as engine, engine.begin() as conn:
            rows = _scan_one(conn, delete)
        verb = "deleted" if delete else "found"
        progress(
            Event(
                "null-instance-uuid-scan",
                "database",
                f"{target.name}: {sum(rows.values())} row(s) {verb}",
                {"database": target.name},
            )
        )
        out.append(NullUuidDatabase(target.name, mask(target.url), rows))
    return NullUuidResult(tuple(out), delete)
