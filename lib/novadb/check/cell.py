"""``check`` of one cell database's tables: archive's backlog and what would make archive fail.

Every figure comes from a ``COUNT``, ``MIN`` or ``MAX`` over primary keys and
``deleted`` columns, or from the server's catalogue; archive's own dry-run
queries (:func:`novadb.archive.tree_sql.would_move`) count what a run to
completion would move, so the two never disagree.  Those, and the foreign
keys that hold rows back, are only looked at when some row is soft-deleted:
a clean cell costs one catalogue read and a handful of queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from novadb.archive.drift import shadow_problems
from novadb.archive.graph import MODEL_TABLES, Graph, load_graph
from novadb.archive.tree_sql import Blocker, Criteria, Schema, would_move
from novadb.check.dialect import Catalogue, compares_types, next_ids
from novadb.findings import BLOCKER, WARNING, Finding
from novadb.schema.null_uuid import EXCLUDED

ARCHIVE = "novadb archive --until-complete --all-cells"
SHOWN = 5


@dataclass(frozen=True)
class CellFacts:
    """Archive's view of one cell database."""

    archivable: dict[str, int] = field(default_factory=dict)
    oldest_deleted: dict[str, datetime] = field(default_factory=dict)
    held_back: dict[str, int] = field(default_factory=dict)
    null_uuids: dict[str, int] = field(default_factory=dict)


def check_cell(
    conn: Connection, database: str, columns: Catalogue
) -> tuple[list[Finding], CellFacts]:
    """Shadow tables, archive backlog, held-back rows, id collisions and NULL uuids."""
    graph = load_graph(conn)
    findings = _missing_shadows(conn, database, columns)
    drift, lacking = _drift(conn, graph, columns, database)
    findings += drift
    deleted, oldest = _soft_deleted(conn, graph)
    archivable: dict[str, int] = {}
    held: dict[str, int] = {}
    if deleted:  # nothing is soft-deleted: nothing moves, nothing is held back
        schema = Schema(conn, graph)
        failed = frozenset(t for t in graph.tables if _tree_lacks(graph, t, lacking))
        for name, query in would_move(schema, Criteria(), failed).items():
            moving = int(conn.execute(query).scalar() or 0)
            if moving:
                archivable[name] = moving
        if archivable:
            findings.append(_backlog(database, archivable, oldest))
        held_findings, held = _held_back(conn, schema, database, set(deleted))
        findings += held_findings
    findings += _id_collisions(conn, graph, database)
    nulls = _null_uuids(conn, columns)
    if nulls:
        total = sum(nulls.values())
        tables = ", ".join(f"{t} {n}" for t, n in sorted(nulls.items()))
        findings.append(Finding(
            database, WARNING, "null-instance-uuid",
            f"{total} row(s) belong to no instance (instance uuid NULL): {tables}",
            total, "novadb null-instance-uuid-scan --delete",
        ))  # fmt: skip
    return findings, CellFacts(archivable, oldest, held, nulls)


def _null_uuids(conn: Connection, columns: Catalogue) -> dict[str, int]:
    """Rows per table whose instance uuid is NULL, by ``null-instance-uuid-scan``'s rule.

    The same tables and columns as the scan counts and deletes:
    ``instances.uuid`` and every ``instance_uuid``, shadow tables included,
    ``fixed_ips`` excepted.
    """
    out = {}
    for name, cols in sorted(columns.items()):
        wanted = "uuid" if name in ("instances", "shadow_instances") else "instance_uuid"
        if name in EXCLUDED or wanted not in cols:
            continue
        table = sa.table(name, sa.column(wanted))
        query = sa.select(sa.func.count()).select_from(table).where(table.c[wanted].is_(None))
        found = int(conn.execute(query).scalar() or 0)
        if found:
            out[name] = found
    return out


def _missing_shadows(conn: Connection, database: str, columns: Catalogue) -> list[Finding]:
    """Nova tables that archive would move but whose shadow twin is gone."""
    mysql = conn.dialect.name == "mysql"
    out = []
    for name in MODEL_TABLES:
        if name not in columns or f"shadow_{name}" in columns:
            continue
        if "deleted" not in columns[name]:
            continue  # never soft-deleted, never archived: Nova gives it no shadow
        fix = f"CREATE TABLE shadow_{name} AS SELECT * FROM {name} WHERE 1 = 0"
        if mysql:
            fix += f"; ALTER TABLE shadow_{name} ADD PRIMARY KEY (id)"
        out.append(Finding(
            database, BLOCKER, "shadow-missing",
            f"shadow_{name} is missing: archive never moves {name} rows (and keeps their "
            "parents), and Nova's migrations that alter it fail",
            1, fix, subject=name,
        ))  # fmt: skip
    return out


def _drift(
    conn: Connection, graph: Graph, columns: Catalogue, database: str
) -> tuple[list[Finding], set[str]]:
    """Shadow tables lacking a live column (archive fails the tree) or typed differently.

    Returns the findings and the tables whose shadow lacks a column.
    """
    out = []
    lacking: set[str] = set()
    # What else would fail archive's copy (the shared rule archive refuses by).
    others = shadow_problems(conn, graph.tables)
    for name in graph.tables:
        live, shadow = columns[name], columns[f"shadow_{name}"]
        missing = [c for c in live if c not in shadow]
        statements = [f"ALTER TABLE shadow_{name} ADD COLUMN {c} {live[c]}" for c in missing]
        differ = []
        if compares_types(conn):
            for column, kind in live.items():
                if column in shadow and shadow[column] != kind:
                    differ.append(column)
                    statements.append(f"ALTER TABLE shadow_{name} MODIFY {column} {kind}")
        extra = [p for p in others.get(name, []) if not p.lacks and p.column not in differ]
        statements += [p.fix for p in extra]
        if not statements:
            continue
        parts = []
        if missing:
            parts.append(f"lacks {', '.join(missing)}")
            lacking.add(name)
        if differ:
            parts.append(f"types {', '.join(differ)} differently")
        if any(not p.lacks for p in others.get(name, [])):
            lacking.add(name)  # archive refuses the tree, as when a column is missing
        parts += [p.what for p in extra]
        out.append(Finding(
            database, BLOCKER, "shadow-drift",
            f"shadow_{name} differs from {name} ({'; '.join(parts)}): archive cannot copy "
            "its rows", len(missing) + len(differ) + len(extra), "; ".join(statements),
            subject=name,
        ))  # fmt: skip
    return out, lacking


def _tree_lacks(graph: Graph, root: str, lacking: set[str]) -> bool:
    """As archive: a tree fails as a whole when any of its tables' shadows lacks a column."""
    return root in lacking or any(e.child in lacking for e in graph.subtree(root))


def _soft_deleted(conn: Connection, graph: Graph) -> tuple[dict[str, int], dict[str, datetime]]:
    """Soft-deleted rows and the oldest ``deleted_at`` per table, in one statement."""
    parts = []
    for name in graph.tables:
        t = sa.table(name, sa.column("deleted"), sa.column("deleted_at", sa.DateTime()))
        parts.append(
            sa.select(sa.literal(name), sa.func.count(), sa.func.min(t.c.deleted_at))
            .select_from(t)
            .where(t.c.deleted != 0)
        )
    if not parts:
        return {}, {}
    counts: dict[str, int] = {}
    oldest: dict[str, datetime] = {}
    for row in conn.execute(sa.union_all(*parts)):
        name, count, first = tuple(row)
        if count:
            counts[str(name)] = int(count)
        if isinstance(first, datetime):
            oldest[str(name)] = first
    return counts, oldest


def _backlog(database: str, rows: dict[str, int], oldest: dict[str, datetime]) -> Finding:
    total = sum(rows.values())
    top = sorted(rows.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    shown = ", ".join(f"{t} {n}" for t, n in top)
    more = f", +{len(rows) - 3} more" if len(rows) > 3 else ""
    dates = [d for t, d in oldest.items() if t in rows]
    since = f"; oldest deleted_at {min(dates):%Y-%m-%d}" if dates else ""
    return Finding(
        database, WARNING, "archivable-rows",
        f"{total} row(s) to archive in {len(rows)} table(s) ({shown}{more}){since}",
        total, ARCHIVE,
    )  # fmt: skip


def _held_back(
    conn: Connection, schema: Schema, database: str, deleted: set[str]
) -> tuple[list[Finding], dict[str, int]]:
    """Soft-deleted rows archive leaves live because a table it never moves references them."""
    out: list[Finding] = []
    held: dict[str, int] = {}
    for name in schema.graph.tables:
        blockers = schema.blockers.get(name, [])
        if not blockers or name not in deleted:
            continue
        total = int(conn.execute(schema.tree(name, Criteria()).held_back()).scalar() or 0)
        if not total:
            continue
        held[name] = total
        for blocker in blockers:
            out += _held_by(conn, schema, database, name, blocker)
    return out, held


def _held_by(
    conn: Connection, schema: Schema, database: str, name: str, blocker: Blocker
) -> list[Finding]:
    root = schema.live[name]
    ref = sa.table(blocker.table, sa.column(blocker.column))
    where = [
        root.c.deleted != 0,
        sa.exists().where(ref.c[blocker.column] == root.c[blocker.parent_column]),
    ]
    count = int(
        conn.execute(sa.select(sa.func.count()).select_from(root).where(*where)).scalar() or 0
    )
    if not count:
        return []
    ids = conn.execute(sa.select(root.c.id).where(*where).order_by(root.c.id).limit(SHOWN))
    return [Finding(
        database, WARNING, "archive-held-back",
        f"{count} deleted {name} row(s) stay live: {blocker.table}.{blocker.column}, which "
        "archive never moves, still references them; delete those references, then archive",
        count,
        f"DELETE FROM {blocker.table} WHERE {blocker.column} IN (SELECT {blocker.parent_column} "
        f"FROM {name} WHERE deleted != 0)",
        subject=f"{name}<-{blocker.table}.{blocker.column}",
        examples=tuple(str(r[0]) for r in ids),
    )]  # fmt: skip


def _shadow_tops(conn: Connection, names: list[str]) -> dict[str, int]:
    """``MAX(id)`` of each non-empty shadow table, in one statement."""
    if not names:
        return {}
    parts = [
        sa.select(sa.literal(name), sa.func.max(sa.table(f"shadow_{name}", sa.column("id")).c.id))
        for name in names
    ]
    return {str(n): int(top) for n, top in conn.execute(sa.union_all(*parts)) if top is not None}


def _id_collisions(conn: Connection, graph: Graph, database: str) -> list[Finding]:
    """Shadow ids the live table will hand out again, or already has: duplicate keys ahead."""
    out = []
    tops = _shadow_tops(conn, list(graph.tables))
    upcoming = next_ids(conn, list(tops))
    mysql = conn.dialect.name == "mysql"
    for name in tops:
        live = sa.table(name, sa.column("id"))
        shadow = sa.table(f"shadow_{name}", sa.column("id"))
        start = upcoming.get(name)
        if start is not None and tops[name] >= start:
            ahead = int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(shadow).where(shadow.c.id >= start)
                ).scalar_one()
            )
            fix = (
                f"ALTER TABLE {name} AUTO_INCREMENT = {tops[name] + 1}"
                if mysql
                else f"DELETE FROM shadow_{name} WHERE id >= {start}"
            )
            out.append(Finding(
                database, BLOCKER, "shadow-id-ahead",
                f"shadow_{name} holds {ahead} id(s) from {start}, the next id {name} hands "
                f"out, up to {tops[name]}: new rows will reuse them and archive will fail on "
                "a duplicate key", ahead, fix, subject=name,
            ))  # fmt: skip
        both = sa.select(live.c.id).select_from(live.join(shadow, shadow.c.id == live.c.id))
        dup = int(
            conn.execute(sa.select(sa.func.count()).select_from(both.subquery())).scalar() or 0
        )
        if dup:
            ids = conn.execute(both.order_by(live.c.id).limit(SHOWN)).scalars()
            out.append(Finding(
                database, BLOCKER, "shadow-id-duplicate",
                f"{dup} {name} row(s) have ids that shadow_{name} already holds: archiving "
                "them fails on a duplicate key; compare them, then delete the stale shadow "
                "copies", dup, f"DELETE FROM shadow_{name} WHERE id IN (SELECT id FROM {name})",
                subject=name, examples=tuple(str(i) for i in ids),
            ))  # fmt: skip
    return out
