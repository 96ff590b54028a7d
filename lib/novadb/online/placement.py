"""Placement 16's online data migrations (``placement-manage db online_data_migrations``)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from novadb.online.base import Context, Outcome, Unmigratable, after, next_page, write

INCOMPLETE_ID = "00000000-0000-0000-0000-000000000000"


def set_root_provider_ids(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """Providers created before nested providers get ``root_provider_id``.

    A provider without a parent is its own root; one whose parent has a root
    takes the parent's; one whose parent has none yet is reported (a later
    run, after the parent, fixes it).
    """
    assert ctx.placement is not None
    rp = ctx.table(ctx.placement, "resource_providers")
    parent = rp.alias("parent")
    query = (
        sa.select(rp.c.id, rp.c.parent_provider_id, parent.c.root_provider_id.label("proot"))
        .select_from(rp.outerjoin(parent, parent.c.id == rp.c.parent_provider_id))
        .where(rp.c.root_provider_id.is_(None), rp.c.id > after(state))
        .order_by(rp.c.id)
        .limit(limit)
    )
    rows = next_page(ctx.placement, query, state)
    if not rows:
        return Outcome()
    roots = {int(r.id): int(r.id) for r in rows if r.parent_provider_id is None}
    roots |= {
        int(r.id): int(r.proot) for r in rows if r.parent_provider_id is not None and r.proot
    }
    bad = [
        Unmigratable("resource_providers", str(r.id), "its parent has no root provider yet")
        for r in rows
        if int(r.id) not in roots
    ]

    def update(conn: Connection) -> int:
        statement = (
            sa.update(rp)
            .where(rp.c.id.in_(list(roots)), rp.c.root_provider_id.is_(None))
            .values(root_provider_id=sa.case(roots, value=rp.c.id))
        )
        return conn.execute(statement).rowcount

    done = write(ctx.placement, update) if roots else 0
    return Outcome(found=len(rows), done=done, unmigratable=bad)


def _external(conn: Connection, table: sa.Table, external_id: str) -> int:
    """Id of the projects/users row for ``external_id``, created if missing."""
    found = conn.execute(sa.select(table.c.id).where(table.c.external_id == external_id)).scalar()
    if found is not None:
        return int(found)
    result = conn.execute(sa.insert(table).values(external_id=external_id))
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def create_incomplete_consumers(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """Allocations whose consumer has no ``consumers`` row get one.

    Its project and user are ``[placement]incomplete_consumer_project_id`` and
    ``_user_id`` (default the all-zero uuid), created as Placement creates them.
    """
    assert ctx.placement is not None
    alloc = ctx.table(ctx.placement, "allocations")
    consumers = ctx.table(ctx.placement, "consumers")
    projects = ctx.table(ctx.placement, "projects")
    users = ctx.table(ctx.placement, "users")
    missing = (
        sa.select(alloc.c.consumer_id)
        .where(~sa.exists().where(consumers.c.uuid == alloc.c.consumer_id))
        .distinct()
        .order_by(alloc.c.consumer_id)
        .limit(limit)
    )
    with ctx.placement.connect() as conn:
        uuids = [str(r[0]) for r in conn.execute(missing)]
    if not uuids:
        return Outcome()
    project = ctx.option("placement", "incomplete_consumer_project_id") or INCOMPLETE_ID
    user = ctx.option("placement", "incomplete_consumer_user_id") or INCOMPLETE_ID

    def insert(conn: Connection) -> int:
        pid, uid = _external(conn, projects, project), _external(conn, users, user)
        fresh = (
            sa.select(alloc.c.consumer_id, sa.literal(pid), sa.literal(uid), sa.literal(0))
            .where(
                alloc.c.consumer_id.in_(uuids),
                ~sa.exists().where(consumers.c.uuid == alloc.c.consumer_id),
            )
            .distinct()
        )
        statement = consumers.insert().from_select(
            ["uuid", "project_id", "user_id", "generation"], fresh
        )
        return conn.execute(statement).rowcount

    return Outcome(found=len(uuids), done=write(ctx.placement, insert))
