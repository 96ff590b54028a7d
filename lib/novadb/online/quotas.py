"""Pike's quota moves: cell limits copied into the API database, then soft-deleted.

The cell's ``quotas``, ``project_user_quotas`` and ``quota_classes`` rows go
to the API database's tables of the same names.

As Nova: live cell rows only (``deleted = 0``); a limit already in the API
database is left as it is (Nova ignores ``QuotaExists``: the API value is the
one in force, it is read first) and the cell row is deleted all the same; a
per-user limit on a per-project resource (``fixed_ips``, ``floating_ips``,
``networks``) becomes a per-project limit.  Unlike Nova, one limit already
present does not make the whole batch's inserts roll back (Nova then deletes
the batch from the cell anyway, losing the limits that were not yet copied):
each row is inserted unless its key is present.

The copy commits before the delete, so a run cut between the two is repaired
by the next one (the copy is then skipped, the delete done).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from novadb.online.base import Context, Outcome, after, next_page, write
from novadb.online.common import folded, soft_delete, utcnow

# nova.db.main.api.PER_PROJECT_QUOTAS: never per user, whatever the cell row says.
PER_PROJECT = frozenset({"fixed_ips", "floating_ips", "networks"})


def _insert_missing(
    conn: Connection, table: sa.Table, key: tuple[str, ...], rows: list[dict[str, Any]]
) -> int:
    """INSERT the ``rows`` whose ``key`` is not in ``table`` yet: one SELECT, one INSERT.

    Keys are compared as the database compares them (case-insensitively on
    MySQL, NULL equal to NULL so a NULL project is not copied twice).
    """
    if not rows:
        return 0
    engine = conn.engine

    def fold(row: Any) -> tuple[Any, ...]:
        return tuple(folded(engine, row[k]) if isinstance(row[k], str) else row[k] for k in key)

    conditions = []
    for k in key:
        values = {r[k] for r in rows}
        known = [v for v in values if v is not None]
        condition = table.c[k].in_(known)
        conditions.append(sa.or_(condition, table.c[k].is_(None)) if None in values else condition)
    query = sa.select(*[table.c[k] for k in key]).where(*conditions)
    present = {fold(r._mapping) for r in conn.execute(query)}
    missing: list[dict[str, Any]] = []
    for row in rows:
        folded_key = fold(row)
        if folded_key not in present:
            present.add(folded_key)
            missing.append(row)
    if missing:
        conn.execute(table.insert(), missing)
    return len(missing)


def _soft_delete(engine: Engine, table: sa.Table, ids: list[int]) -> int:
    when = utcnow()

    def delete(conn: Connection) -> int:
        statement = (
            sa.update(table)
            .where(table.c.id.in_(ids), table.c.deleted == 0)
            .values(**soft_delete(table, when))
        )
        return conn.execute(statement).rowcount

    return write(engine, delete)


def _move_limits(ctx: Context, limit: int, state: dict[str, Any], per_user: bool) -> Outcome:
    assert ctx.main is not None and ctx.api is not None
    name = "project_user_quotas" if per_user else "quotas"
    cell = ctx.table(ctx.main, name)
    cursor = f"after_{name}"
    columns = [cell.c.id, cell.c.project_id, cell.c.resource, cell.c.hard_limit]
    if per_user:
        columns.append(cell.c.user_id)
    query = (
        sa.select(*columns)
        .where(cell.c.deleted == 0, cell.c.id > after(state, cursor))
        .order_by(cell.c.id)
        .limit(limit)
    )
    with ctx.main.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        return Outcome()
    state[cursor] = rows[-1].id
    now = utcnow()
    project_rows: list[dict[str, Any]] = []
    user_rows: list[dict[str, Any]] = []
    for r in rows:
        limit_row = {
            "project_id": r.project_id,
            "resource": r.resource,
            "hard_limit": r.hard_limit,
            "created_at": now,
        }
        if per_user and r.resource not in PER_PROJECT:
            user_rows.append({"user_id": r.user_id, **limit_row})
        else:
            project_rows.append(limit_row)
    api_quotas = ctx.table(ctx.api, "quotas")
    api_user_quotas = ctx.table(ctx.api, "project_user_quotas")
    quota_key = ("project_id", "resource")
    user_key = ("user_id", "project_id", "resource")

    def copy(conn: Connection) -> int:
        return _insert_missing(conn, api_quotas, quota_key, project_rows) + _insert_missing(
            conn, api_user_quotas, user_key, user_rows
        )

    write(ctx.api, copy)
    done = _soft_delete(ctx.main, cell, [int(r.id) for r in rows])
    return Outcome(found=len(rows), done=done)


def migrate_quota_limits_to_api_db(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """Per-project limits first; per-user ones only in a call the former did not fill."""
    projects = _move_limits(ctx, limit, state, per_user=False)
    if projects.found >= limit:
        return projects
    users = _move_limits(ctx, limit - projects.found, state, per_user=True)
    return Outcome(
        found=projects.found + users.found,
        done=projects.done + users.done,
        unmigratable=projects.unmigratable + users.unmigratable,
    )


def migrate_quota_classes_to_api_db(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """Quota classes; the API table has no unique key, so presence is (class_name, resource)."""
    assert ctx.main is not None and ctx.api is not None
    cell = ctx.table(ctx.main, "quota_classes")
    query = (
        sa.select(cell.c.id, cell.c.class_name, cell.c.resource, cell.c.hard_limit)
        .where(cell.c.deleted == 0, cell.c.id > after(state))
        .order_by(cell.c.id)
        .limit(limit)
    )
    rows = next_page(ctx.main, query, state)
    if not rows:
        return Outcome()
    now = utcnow()
    key = ("class_name", "resource")
    classes = [
        {
            "class_name": r.class_name,
            "resource": r.resource,
            "hard_limit": r.hard_limit,
            "created_at": now,
        }
        for r in rows
    ]
    api_classes = ctx.table(ctx.api, "quota_classes")
    write(ctx.api, lambda conn: _insert_missing(conn, api_classes, key, classes))
    done = _soft_delete(ctx.main, cell, [int(r.id) for r in rows])
    return Outcome(found=len(rows), done=done)
