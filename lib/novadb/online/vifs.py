"""Stein's ``fill_virtual_interface_list``: ``virtual_interfaces`` rebuilt from the info cache.

What Nova does, in every mapped cell (cell0 too): walk live instances
(``deleted = 0`` and not soft-deleted) in ``(created_at, id)`` order after a
marker; for each whose live ``instance_info_caches`` row has a non-empty
``network_info``, compare the port ids of ``network_info`` with the
instance's live VIF rows (ordered by ``created_at, id``).  Equal: nothing.
Fewer VIF rows than ports (a pre-Newton instance) or as many in another
order: soft-delete the VIF rows and create one per port, in cache order:
``uuid`` = port id, ``address`` = ``<mac>/<port id>``, ``network_id`` NULL,
``tag`` kept from the old row of the same port.  More VIF rows than ports:
nothing (an attach in progress); reported here.  ``found`` counts instances
with a cache, ``done`` rebuilds; every live instance walked counts against
the limit, as in Nova, and is reported as ``walked``.

The marker is Nova's own, so a later ``nova-manage`` (or novadb) run goes on
where this one stopped instead of rescanning every instance: a
``virtual_interfaces`` row with ``instance_uuid`` and ``uuid`` the all-zero
uuid, ``address`` ``ff:ff:ff:ff:ff:ff/<zero uuid>`` and, in ``tag``, the
last instance the call walked, with a cache or not (so a cell whose
instances have no network, such as cell0's, gets one too); its foreign key
needs an ``instances`` row with the zero uuid, created soft-deleted as Nova
does (only that row: Nova's ``Instance.create()`` also leaves a default
security group, a deleted info cache and extra row behind).

Differences from Nova: a ``network_info`` that is not a JSON list of
objects with a string ``id``, or whose new addresses are already used by
live VIF rows (the ``address, deleted`` unique key), is reported instead of
failing the whole migration; and a marker naming an instance that is gone
(archived) restarts the walk rather than failing every run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from novadb.online.base import Context, Outcome, Unmigratable, write
from novadb.online.common import FAKE_UUID, folded, soft_delete, utcnow

SOFT_DELETED = "soft-delete"
MARKER_ADDRESS = f"ff:ff:ff:ff:ff:ff/{FAKE_UUID}"


@dataclass
class _Plan:
    """One instance to rebuild: the VIF rows it had, the ones it gets, the cache it came from."""

    instance_id: int
    instance_uuid: str
    network_info: str
    old_ids: list[int]
    new_rows: list[dict[str, Any]] = field(default_factory=list)


def _ports(network_info: str) -> list[dict[str, Any]] | None:
    """The cache's VIFs, or None when it is not a list of objects with a string ``id``."""
    try:
        vifs = json.loads(network_info)
    except ValueError:
        return None
    if not isinstance(vifs, list):
        return None
    if not all(isinstance(v, dict) and isinstance(v.get("id"), str) for v in vifs):
        return None
    return vifs


def _after_marker(conn: Connection, inst: sa.Table, vif: sa.Table) -> sa.ColumnElement[bool]:
    """Instances after Nova's marker in ``(created_at, id)`` order (all when there is none)."""
    marker = conn.execute(
        sa.select(vif.c.tag).where(vif.c.instance_uuid == FAKE_UUID).order_by(vif.c.id).limit(1)
    ).scalar()
    position = None
    if marker is not None:
        position = conn.execute(
            sa.select(inst.c.created_at, inst.c.id).where(inst.c.uuid == marker)
        ).first()
    if position is None:
        return sa.true()
    created, ident = position
    if created is None:  # NULLs sort first in both MySQL and SQLite
        return sa.or_(
            inst.c.created_at.is_not(None),
            sa.and_(inst.c.created_at.is_(None), inst.c.id > ident),
        )
    return sa.or_(
        inst.c.created_at > created,
        sa.and_(inst.c.created_at == created, inst.c.id > ident),
    )


def _set_marker(conn: Connection, inst: sa.Table, vif: sa.Table, last: str) -> None:
    """Nova's ``_set_or_delete_marker_for_migrate_instances``."""
    now = utcnow()
    conn.execute(sa.delete(vif).where(vif.c.instance_uuid == FAKE_UUID))
    if conn.execute(sa.select(inst.c.id).where(inst.c.uuid == FAKE_UUID)).first() is None:
        created = conn.execute(
            sa.insert(inst).values(
                uuid=FAKE_UUID,
                project_id=FAKE_UUID,
                user_id=FAKE_UUID,
                created_at=now,
                deleted=0,
                cleaned=0,
                hidden=False,
                shutdown_terminate=False,
                disable_terminate=False,
            )
        )
        key = created.inserted_primary_key
        assert key is not None
        conn.execute(sa.update(inst).where(inst.c.id == key[0]).values(**soft_delete(inst, now)))
    conn.execute(
        sa.insert(vif).values(
            instance_uuid=FAKE_UUID,
            uuid=FAKE_UUID,
            tag=last,
            address=MARKER_ADDRESS,
            created_at=now,
            deleted=0,
        )
    )


def fill_virtual_interface_list(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """Walk up to ``limit`` live instances after the marker; rebuild those that need it."""
    assert ctx.main is not None
    engine = ctx.main
    inst = ctx.table(engine, "instances")
    cache = ctx.table(engine, "instance_info_caches")
    vif = ctx.table(engine, "virtual_interfaces")
    with engine.connect() as conn:
        query = (
            sa.select(inst.c.id, inst.c.uuid, cache.c.network_info)
            .select_from(
                inst.outerjoin(
                    cache, sa.and_(cache.c.instance_uuid == inst.c.uuid, cache.c.deleted == 0)
                )
            )
            .where(
                inst.c.deleted == 0,
                sa.or_(inst.c.vm_state != SOFT_DELETED, inst.c.vm_state.is_(None)),
                inst.c.uuid != FAKE_UUID,
                _after_marker(conn, inst, vif),
            )
            .order_by(inst.c.created_at, inst.c.id)
            .limit(limit)
        )
        walked = conn.execute(query).all()
        if not walked:
            return Outcome()
        # Nova looks no further at an instance without a cache or with an empty one.
        rows = [r for r in walked if (r.network_info or "").strip() not in ("", "[]")]
        old = _live_vifs(conn, vif, [r.uuid for r in rows]) if rows else {}
    bad: list[Unmigratable] = []
    plans: list[_Plan] = []
    skipped = 0
    now = utcnow()
    for r in rows:
        ports = _ports(r.network_info)
        if ports is None:
            reason = "network_info is not a JSON list of VIFs with string ids"
            bad.append(Unmigratable("instances", str(r.id), reason))
            continue
        if not ports:  # Nova skips an empty network_info ("[ ]") and does not count it
            skipped += 1
            continue
        have = old.get(r.uuid, [])
        cached = [p["id"] for p in ports]
        if cached == [v.uuid for v in have]:
            continue
        if len(have) > len(cached):
            reason = (
                f"{len(have)} VIF rows but {len(cached)} in network_info "
                "(an interface attach in progress?); left as is"
            )
            bad.append(Unmigratable("instances", str(r.id), reason))
            continue
        tags: dict[str, Any] = {}
        for v in have:
            tags.setdefault(v.uuid, v.tag)
        plan = _Plan(int(r.id), r.uuid, r.network_info, [int(v.id) for v in have])
        for port in ports:
            plan.new_rows.append(
                {
                    "uuid": port["id"],
                    "address": f"{port.get('address')}/{port['id']}",
                    "instance_uuid": r.uuid,
                    "tag": tags.get(port["id"]),
                    "network_id": None,
                    "created_at": now,
                    "deleted": 0,
                }
            )
        plans.append(plan)
    plans, clashes = _without_clashes(ctx, plans)
    bad += clashes
    last = walked[-1].uuid

    def rebuild(conn: Connection) -> int:
        fresh = _unchanged(conn, inst, cache, vif, plans)
        old_ids = [i for p in fresh for i in p.old_ids]
        if old_ids:
            conn.execute(
                sa.update(vif)
                .where(vif.c.id.in_(old_ids), vif.c.deleted == 0)
                .values(**soft_delete(vif, now))
            )
        new_rows = [row for p in fresh for row in p.new_rows]
        if new_rows:
            conn.execute(vif.insert(), new_rows)
        _set_marker(conn, inst, vif, last)
        return len(fresh)

    done = write(engine, rebuild)
    return Outcome(found=len(rows) - skipped, done=done, unmigratable=bad, walked=len(walked))


def _live_vifs(conn: Connection, vif: sa.Table, uuids: list[str]) -> dict[str, list[Any]]:
    """Live VIF rows per instance uuid, in Nova's order (``created_at, id``)."""
    query = (
        sa.select(vif.c.id, vif.c.uuid, vif.c.tag, vif.c.instance_uuid)
        .where(vif.c.instance_uuid.in_(uuids), vif.c.deleted == 0)
        .order_by(vif.c.created_at, vif.c.id)
    )
    out: dict[str, list[Any]] = {}
    for v in conn.execute(query):
        out.setdefault(v.instance_uuid, []).append(v)
    return out


def _without_clashes(ctx: Context, plans: list[_Plan]) -> tuple[list[_Plan], list[Unmigratable]]:
    """Drop plans whose new addresses are taken by live rows that stay, or by an earlier plan."""
    assert ctx.main is not None
    engine = ctx.main
    if not plans:
        return plans, []
    vif = ctx.table(engine, "virtual_interfaces")
    leaving = {i for p in plans for i in p.old_ids}
    addresses = sorted({row["address"] for p in plans for row in p.new_rows})
    query = sa.select(vif.c.id, vif.c.address).where(
        vif.c.address.in_(addresses), vif.c.deleted == 0
    )
    with engine.connect() as conn:
        taken = {folded(engine, a) for i, a in conn.execute(query) if i not in leaving}
    keep: list[_Plan] = []
    bad: list[Unmigratable] = []
    for p in plans:
        mine = [folded(engine, row["address"]) for row in p.new_rows]
        clash = next((a for a in mine if a in taken), None)
        if clash is None and len(set(mine)) < len(mine):
            clash = next(a for a in mine if mine.count(a) > 1)
        if clash is not None:
            reason = f"VIF address {clash} is already in use by another live VIF row"
            bad.append(Unmigratable("instances", str(p.instance_id), reason))
            continue
        taken.update(mine)
        keep.append(p)
    return keep, bad


def _unchanged(
    conn: Connection, inst: sa.Table, cache: sa.Table, vif: sa.Table, plans: list[_Plan]
) -> list[_Plan]:
    """The plans whose instance, cache and live VIF rows are still as read (rows locked).

    The compare-and-swap of this migration: a VIF attached or detached, a
    cache refreshed or an instance deleted since the read drops the plan.
    """
    if not plans:
        return []
    uuids = [p.instance_uuid for p in plans]
    live = (
        sa.select(inst.c.uuid, cache.c.network_info)
        .select_from(inst.join(cache, cache.c.instance_uuid == inst.c.uuid))
        .where(
            inst.c.uuid.in_(uuids),
            inst.c.deleted == 0,
            cache.c.deleted == 0,
            sa.or_(inst.c.vm_state != SOFT_DELETED, inst.c.vm_state.is_(None)),
        )
        .with_for_update()
    )
    caches = {instance: info for instance, info in conn.execute(live)}
    vifs = conn.execute(
        sa.select(vif.c.id, vif.c.instance_uuid)
        .where(vif.c.instance_uuid.in_(uuids), vif.c.deleted == 0)
        .with_for_update()
    ).all()
    ids: dict[str, set[int]] = {}
    for v in vifs:
        ids.setdefault(v.instance_uuid, set()).add(int(v.id))
    return [
        p
        for p in plans
        if caches.get(p.instance_uuid) == p.network_info
        and ids.get(p.instance_uuid, set()) == set(p.old_ids)
    ]


def fill_virtual_interface_list_all_cells(
    ctx: Context, limit: int, state: dict[str, Any]
) -> Outcome:
    """Nova walks every mapped cell for this migration, cell0 included, whatever ``[database]`` is.

    Each cell keeps its own cursor (and Nova's marker row in its own
    database); the limit is shared, cell after cell.
    """
    total = Outcome()
    for name, cell_uuid, engine in ctx.cells:
        if total.seen >= limit:
            break
        contexts = state.setdefault("contexts", {})
        if cell_uuid not in contexts:
            contexts[cell_uuid] = Context(ctx.settings, main=engine, api=ctx.api, cell_name=name)
        total.add(
            fill_virtual_interface_list(
                contexts[cell_uuid], limit - total.seen, state.setdefault(cell_uuid, {})
            )
        )
    return total
