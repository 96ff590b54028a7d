"""API-database migrations that read every cell: ``instance_mappings`` from the instances.

Both walk ``instance_mappings`` by id, group a batch by cell, ask each cell
database once for the batch's instances, and write the API database with
compare-and-swap updates (``... WHERE <column> IS NULL``).  The cells are
``ctx.cells`` (label, cell-mapping uuid, engine); a mapping whose cell has
no database in the run is reported, not guessed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from novadb.online.base import Context, Outcome, Unmigratable, after, write
from novadb.online.common import FAKE_UUID, folded, utcnow

SOFT_DELETED = "soft-delete"  # nova.compute.vm_states.SOFT_DELETED


def _cells(ctx: Context) -> dict[int, tuple[str, Engine | None]]:
    """Cell mapping id -> (label, engine or None when the run has no engine for it)."""
    assert ctx.api is not None
    cm = ctx.table(ctx.api, "cell_mappings")
    engines = {uuid: (name, engine) for name, uuid, engine in ctx.cells}
    with ctx.api.connect() as conn:
        rows = conn.execute(sa.select(cm.c.id, cm.c.uuid, cm.c.name)).all()
    out: dict[int, tuple[str, Engine | None]] = {}
    for r in rows:
        name, engine = engines.get(r.uuid, (r.name or r.uuid, None))
        out[int(r.id)] = (name, engine)
    return out


def _batch(
    ctx: Context, limit: int, state: dict[str, Any], column: str
) -> tuple[list[Any], dict[int | None, list[Any]]]:
    """Up to ``limit`` mappings with ``column`` NULL after the cursor, and them by cell id."""
    assert ctx.api is not None
    im = ctx.table(ctx.api, "instance_mappings")
    query = sa.select(im.c.id, im.c.instance_uuid, im.c.cell_id).where(
        im.c[column].is_(None), im.c.id > after(state)
    )
    if column == "user_id":
        # Nova leaves out mappings of the virtual-interface migration's marker project.
        query = query.where(im.c.project_id != FAKE_UUID)
    with ctx.api.connect() as conn:
        rows = list(conn.execute(query.order_by(im.c.id).limit(limit)).all())
    if rows:
        state["after"] = rows[-1].id
    by_cell: dict[int | None, list[Any]] = defaultdict(list)
    for r in rows:
        by_cell[None if r.cell_id is None else int(r.cell_id)].append(r)
    return rows, by_cell


def _in_order(reports: list[Unmigratable]) -> list[Unmigratable]:
    """Reports in mapping id order, whatever order the cells were read in."""
    return sorted(reports, key=lambda r: int(r.id))


def _report(rows: list[Any], reason: str) -> list[Unmigratable]:
    return [Unmigratable("instance_mappings", str(r.id), reason) for r in rows]


def _cell(
    cell_id: int | None, cells: dict[int, tuple[str, Engine | None]], rows: list[Any]
) -> tuple[str, Engine] | list[Unmigratable]:
    """The cell's label and engine, or reports when there is none to read."""
    if cell_id is None:
        return _report(rows, "not mapped to a cell yet (instance still building, or stale)")
    name, engine = cells.get(cell_id, (str(cell_id), None))
    if engine is None:
        return _report(rows, f"cell {name} has no database in this run")
    return name, engine


def _cas(engine: Engine, table: sa.Table, column: str, values: dict[int, Any]) -> int:
    """``SET column = CASE id ... END WHERE id IN (...) AND column IS NULL``, one transaction."""
    if not values:
        return 0

    def update(conn: Connection) -> int:
        statement = (
            sa.update(table)
            .where(table.c.id.in_(list(values)), table.c[column].is_(None))
            .values({column: sa.case(values, value=table.c.id), "updated_at": utcnow()})
        )
        return conn.execute(statement).rowcount

    return write(engine, update)


def populate_queued_for_delete(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """``queued_for_delete`` NULL -> True if the instance is deleted or soft-deleted, else False.

    As Nova: deleted means ``deleted = id`` or ``vm_state = 'soft-delete'``;
    a mapping whose instance is not in its cell's database at all is set False
    too (Nova's "any instances we did not just hit must be not-deleted").
    Mappings with no cell are reported (Nova never looks at them, so they
    stay NULL there too).
    """
    assert ctx.api is not None
    rows, by_cell = _batch(ctx, limit, state, "queued_for_delete")
    if not rows:
        return Outcome()
    cells = _cells(ctx)
    bad: list[Unmigratable] = []
    values: dict[int, bool] = {}
    for cell_id, mappings in by_cell.items():
        cell = _cell(cell_id, cells, mappings)
        if isinstance(cell, list):
            bad += cell
            continue
        engine = cell[1]
        inst = ctx.table(engine, "instances")
        uuids = [m.instance_uuid for m in mappings]
        query = sa.select(inst.c.uuid).where(
            inst.c.uuid.in_(uuids),
            sa.or_(inst.c.deleted == inst.c.id, inst.c.vm_state == SOFT_DELETED),
        )
        with engine.connect() as conn:
            deleted = {folded(engine, u) for u in conn.execute(query).scalars()}
        values |= {int(m.id): folded(engine, m.instance_uuid) in deleted for m in mappings}
    im = ctx.table(ctx.api, "instance_mappings")
    done = _cas(ctx.api, im, "queued_for_delete", values)
    return Outcome(found=len(rows), done=done, unmigratable=_in_order(bad))


def populate_user_id(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """``user_id`` NULL -> the instance's ``user_id`` from its cell, deleted instances too.

    Reported, as Nova leaves them: mappings with no cell, mappings whose
    instance is not in the cell's database, cells that cannot be read (Nova
    logs and goes on to the next cell).  An instance with a NULL ``user_id``
    is reported too (Nova would "migrate" it to NULL and find it again on
    every run).
    """
    assert ctx.api is not None
    rows, by_cell = _batch(ctx, limit, state, "user_id")
    if not rows:
        return Outcome()
    cells = _cells(ctx)
    bad: list[Unmigratable] = []
    values: dict[int, str] = {}
    for cell_id, mappings in by_cell.items():
        cell = _cell(cell_id, cells, mappings)
        if isinstance(cell, list):
            bad += cell
            continue
        name, engine = cell
        inst = ctx.table(engine, "instances")
        uuids = [m.instance_uuid for m in mappings]
        try:
            with engine.connect() as conn:
                query = sa.select(inst.c.uuid, inst.c.user_id).where(inst.c.uuid.in_(uuids))
                users = {folded(engine, u): user for u, user in conn.execute(query)}
        except SQLAlchemyError as exc:
            first = (str(exc).splitlines() or [""])[0]
            bad += _report(mappings, f"cell {name} could not be read: {first}")
            continue
        for m in mappings:
            key = folded(engine, m.instance_uuid)
            if key not in users:
                bad.append(
                    Unmigratable(
                        "instance_mappings", str(m.id), f"instance not found in cell {name}"
                    )
                )
            elif users[key] is None:
                bad.append(
                    Unmigratable(
                        "instance_mappings", str(m.id), f"instance in cell {name} has no user_id"
                    )
                )
            else:
                values[int(m.id)] = str(users[key])
    im = ctx.table(ctx.api, "instance_mappings")
    done = _cas(ctx.api, im, "user_id", values)
    return Outcome(found=len(rows), done=done, unmigratable=_in_order(bad))
