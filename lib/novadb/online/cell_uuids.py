"""Cell-database migrations that give rows an id they lack: uuids and ``compute_id``."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from novadb.online.base import Context, Outcome, Unmigratable, after, next_page, write
from novadb.online.common import utcnow


def _fill_uuids(
    ctx: Context, limit: int, state: dict[str, Any], table_name: str, *, live_only: bool
) -> Outcome:
    """Give up to ``limit`` rows with a NULL ``uuid`` a fresh one, by compare-and-swap.

    One UPDATE per batch: ``SET uuid = CASE id WHEN ... END WHERE id IN (...)
    AND uuid IS NULL``, so a row another writer filled meanwhile keeps its value.
    """
    assert ctx.main is not None
    table = ctx.table(ctx.main, table_name)
    query = sa.select(table.c.id).where(table.c.uuid.is_(None), table.c.id > after(state))
    if live_only:
        query = query.where(table.c.deleted == 0)
    with ctx.main.connect() as conn:
        ids = [int(r[0]) for r in conn.execute(query.order_by(table.c.id).limit(limit))]
    if not ids:
        return Outcome()
    state["after"] = ids[-1]
    values = {i: str(uuid.uuid4()) for i in ids}

    def update(conn: Connection) -> int:
        statement = (
            sa.update(table)
            .where(table.c.id.in_(ids), table.c.uuid.is_(None))
            .values(uuid=sa.case(values, value=table.c.id), updated_at=utcnow())
        )
        return conn.execute(statement).rowcount

    return Outcome(found=len(ids), done=write(ctx.main, update))


def migration_migrate_to_uuid(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """``migrations`` rows without a uuid (Nova reads them with read_deleted='no')."""
    return _fill_uuids(ctx, limit, state, "migrations", live_only=True)


def bdm_populate_uuids(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """``block_device_mapping`` rows without a uuid, deleted ones too (Nova's raw query)."""
    return _fill_uuids(ctx, limit, state, "block_device_mapping", live_only=False)


def pci_populate_dev_uuids(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """``pci_devices`` rows without a uuid, deleted ones too (Nova's raw query)."""
    return _fill_uuids(ctx, limit, state, "pci_devices", live_only=False)


def populate_instance_compute_id(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """Instances (deleted too) get ``compute_id`` from the node with their host and node.

    Deleted compute nodes count, as Nova looks them up with read_deleted='yes';
    of several matches the lowest id wins.  Instances whose host/node match no
    node (never scheduled: both NULL) are reported, not retried.
    """
    assert ctx.main is not None
    inst = ctx.table(ctx.main, "instances")
    nodes = ctx.table(ctx.main, "compute_nodes")
    match = sa.and_(nodes.c.host == inst.c.host, nodes.c.hypervisor_hostname == inst.c.node)
    has_node = sa.exists().where(match)
    query = (
        sa.select(inst.c.id, inst.c.host, inst.c.node, has_node.label("has_node"))
        .where(inst.c.compute_id.is_(None), inst.c.id > after(state))
        .order_by(inst.c.id)
        .limit(limit)
    )
    rows = next_page(ctx.main, query, state)
    if not rows:
        return Outcome()
    good = [int(r.id) for r in rows if r.has_node]
    bad = [
        Unmigratable(
            "instances",
            str(r.id),
            "never scheduled (host and node are NULL)"
            if r.host is None and r.node is None
            else f"host {r.host} with node {r.node} not found",
        )
        for r in rows
        if not r.has_node
    ]
    node_id = sa.select(sa.func.min(nodes.c.id)).where(match).scalar_subquery()

    def update(conn: Connection) -> int:
        statement = (
            sa.update(inst)
            .where(inst.c.id.in_(good), inst.c.compute_id.is_(None), has_node)
            .values(compute_id=node_id, updated_at=utcnow())
        )
        return conn.execute(statement).rowcount

    done = write(ctx.main, update) if good else 0
    return Outcome(found=len(rows), done=done, unmigratable=bad)
