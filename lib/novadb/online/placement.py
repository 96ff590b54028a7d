"""Placement 16's online data migrations (``placement-manage db online_data_migrations``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from novadb.online.base import Context, Outcome, Unmigratable, after, write
from novadb.online.common import utcnow

INCOMPLETE_ID = "00000000-0000-0000-0000-000000000000"


def set_root_provider_ids(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """Providers created before nested providers get ``root_provider_id``.

    A provider without a parent is its own root; a child takes its parent's
    root, the value Placement gives a child it creates (Placement 16's
    migration sets every NULL root to the provider's own id, a child's too,
    which cuts the child out of its tree).  Candidates are the providers whose
    root can be known now: no parent, or a parent with a root.  A child whose
    parent gets its root in this call is a candidate of the next call, so one
    run fills a whole tree, level by level.  ``updated_at`` is stamped, as
    Placement's models do on every UPDATE.

    When no candidate is left, providers that still have no root are reported
    (their parent chain loops and never reaches a root), each once per run.
    """
    assert ctx.placement is not None
    rp = ctx.table(ctx.placement, "resource_providers")
    parent = rp.alias("parent")
    query = (
        sa.select(rp.c.id, sa.func.coalesce(parent.c.root_provider_id, rp.c.id).label("root"))
        .select_from(rp.outerjoin(parent, parent.c.id == rp.c.parent_provider_id))
        .where(
            rp.c.root_provider_id.is_(None),
            sa.or_(rp.c.parent_provider_id.is_(None), parent.c.root_provider_id.is_not(None)),
        )
        .order_by(rp.c.id)
        .limit(limit)
    )
    with ctx.placement.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        return _rootless(ctx, rp, limit, state)
    roots = {int(r.id): int(r.root) for r in rows}

    def update(conn: Connection) -> int:
        statement = (
            sa.update(rp)
            .where(rp.c.id.in_(list(roots)), rp.c.root_provider_id.is_(None))
            .values(root_provider_id=sa.case(roots, value=rp.c.id), updated_at=utcnow())
        )
        return conn.execute(statement).rowcount

    return Outcome(found=len(rows), done=write(ctx.placement, update))


def _rootless(ctx: Context, rp: sa.Table, limit: int, state: dict[str, Any]) -> Outcome:
    """Providers whose parent chain never reaches a root, reported page by page, once."""
    assert ctx.placement is not None
    query = (
        sa.select(rp.c.id)
        .where(rp.c.root_provider_id.is_(None), rp.c.id > after(state, "rootless"))
        .order_by(rp.c.id)
        .limit(limit)
    )
    with ctx.placement.connect() as conn:
        ids = [int(i) for i in conn.execute(query).scalars()]
    if not ids:
        return Outcome()
    state["rootless"] = ids[-1]
    reason = "its parent chain loops and never reaches a provider with a root"
    bad = [Unmigratable("resource_providers", str(i), reason) for i in ids]
    return Outcome(found=len(ids), unmigratable=bad)


def _external(conn: Connection, table: sa.Table, external_id: str, now: datetime) -> int:
    """Id of the projects/users row for ``external_id``, created with ``created_at`` if missing."""
    found = conn.execute(sa.select(table.c.id).where(table.c.external_id == external_id)).scalar()
    if found is not None:
        return int(found)
    result = conn.execute(sa.insert(table).values(external_id=external_id, created_at=now))
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def create_incomplete_consumers(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """Allocations whose consumer has no ``consumers`` row get one.

    Its project and user are ``[placement]incomplete_consumer_project_id`` and
    ``_user_id`` (default the all-zero uuid), created as Placement creates them.
    Every row written gets ``created_at``, as Placement's models stamp it; the
    consumer's type stays NULL, as Placement leaves it.
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
        now = utcnow()
        pid, uid = _external(conn, projects, project, now), _external(conn, users, user, now)
        fresh = (
            sa.select(
                alloc.c.consumer_id,
                sa.literal(pid),
                sa.literal(uid),
                sa.literal(0),
                sa.literal(now, sa.DateTime()),
            )
            .where(
                alloc.c.consumer_id.in_(uuids),
                ~sa.exists().where(consumers.c.uuid == alloc.c.consumer_id),
            )
            .distinct()
        )
        statement = consumers.insert().from_select(
            ["uuid", "project_id", "user_id", "generation", "created_at"], fresh
        )
        return conn.execute(statement).rowcount

    return Outcome(found=len(uuids), done=write(ctx.placement, insert))
