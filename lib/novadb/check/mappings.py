"""``check`` across the API database and the cells: instances the API cannot route to.

Nova's API finds an instance through its ``instance_mappings`` row: a row
without a cell, or no row at all, makes a live instance invisible (404 on
GET, missing from lists).  Both directions are compared set-wise, a chunk of
uuids at a time, so memory stays flat and each query is an index lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from novadb.findings import INFO, WARNING, Finding
from novadb.online.common import FAKE_UUID, folded

CHUNK = 1000
SHOWN = 5
LISTED = 20  # uuids written out in a fix's SQL
# nova-manage cell_v2 map_instances keeps its marker as a mapping of this project, no cell.
MARKER_PROJECT = "INSTANCE_MIGRATION_MARKER"

_MAPPINGS = sa.table(
    "instance_mappings", sa.column("id"), sa.column("instance_uuid"), sa.column("cell_id"),
    sa.column("project_id"),
)  # fmt: skip
_BUILDS = sa.table("build_requests", sa.column("instance_uuid"))
_INSTANCES = sa.table("instances", sa.column("id"), sa.column("uuid"), sa.column("deleted"))


@dataclass(frozen=True)
class CellLink:
    """A cell database as the API knows it: its label, mapping uuid and id (None: unmapped)."""

    name: str
    conn: Connection
    uuid: str | None
    cell_id: int | None


def _folded(conn: Connection, value: str) -> str:
    return folded(conn.engine, value)


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _live_instances(conn: Connection) -> Iterator[list[str]]:
    """Uuids of the cell's live instances, ``CHUNK`` at a time in id order."""
    after = 0
    while True:
        rows = conn.execute(
            sa.select(_INSTANCES.c.id, _INSTANCES.c.uuid)
            .where(_INSTANCES.c.deleted == 0, _INSTANCES.c.id > after)
            .order_by(_INSTANCES.c.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            return
        after = int(rows[-1][0])
        yield [str(r[1]) for r in rows if r[1] is not None and r[1] != FAKE_UUID]


def instances_without_mapping(api: Connection, cell: CellLink) -> list[Finding]:
    """Live instances of ``cell`` that have no ``instance_mappings`` row."""
    missing: list[str] = []
    for uuids in _live_instances(cell.conn):
        query = sa.select(_MAPPINGS.c.instance_uuid).where(_MAPPINGS.c.instance_uuid.in_(uuids))
        mapped = {_folded(api, str(u)) for u in api.execute(query).scalars()}
        missing += [u for u in uuids if _folded(api, u) not in mapped]
    if not missing:
        return []
    if cell.uuid is not None:
        fix = f"nova-manage cell_v2 map_instances --cell_uuid {cell.uuid} --reset"
    else:
        fix = (
            "map this database as a cell (nova-manage cell_v2 create_cell), then run "
            "nova-manage cell_v2 map_instances --cell_uuid <its uuid> --reset"
        )
    return [Finding(
        cell.name, WARNING, "instance-without-mapping",
        f"{len(missing)} live instance(s) have no instance mapping: the API cannot see them",
        len(missing), fix, subject=cell.name, examples=tuple(missing[:SHOWN]),
    )]  # fmt: skip


def _quoted(uuids: list[str]) -> str:
    listed = ", ".join(f"'{u}'" for u in uuids[:LISTED])
    if len(uuids) > LISTED:
        listed += f", ... ({len(uuids) - LISTED} more)"
    return listed


def mappings_without_cell(api: Connection, cells: list[CellLink]) -> list[Finding]:
    """Mappings with no cell that are not a build in progress, by where the instance is."""
    im, builds = _MAPPINGS, _BUILDS
    query = (
        sa.select(im.c.instance_uuid)
        .where(
            im.c.cell_id.is_(None),
            sa.or_(im.c.project_id.is_(None), im.c.project_id != MARKER_PROJECT),
            ~sa.exists().where(builds.c.instance_uuid == im.c.instance_uuid),
        )
        .order_by(im.c.id)
    )
    unplaced = [str(u) for u in api.execute(query).scalars() if u is not None]
    if not unplaced:
        return []
    out: list[Finding] = []
    for cell in cells:
        found: list[str] = []
        for uuids in _chunks(unplaced):
            live = sa.select(_INSTANCES.c.uuid).where(
                _INSTANCES.c.uuid.in_(uuids), _INSTANCES.c.deleted == 0
            )
            here = {_folded(cell.conn, str(u)) for u in cell.conn.execute(live).scalars()}
            found += [u for u in uuids if _folded(cell.conn, u) in here]
        if not found:
            continue
        where = f"WHERE cell_id IS NULL AND instance_uuid IN ({_quoted(found)})"
        fix = (
            f"UPDATE instance_mappings SET cell_id = {cell.cell_id} {where}"
            if cell.cell_id is not None
            else f"map {cell.name} as a cell, then set those mappings' cell_id to it"
        )
        out.append(Finding(
            "api", WARNING, "instance-mapping-without-cell",
            f"{len(found)} instance mapping(s) have no cell, but their live instances are in "
            f"{cell.name}: the API cannot reach them",
            len(found), fix, subject=cell.name, examples=tuple(found[:SHOWN]),
        ))  # fmt: skip
        placed = set(found)
        unplaced = [u for u in unplaced if u not in placed]
    if unplaced:
        out.append(Finding(
            "api", INFO, "stale-instance-mapping",
            f"{len(unplaced)} instance mapping(s) have no cell, no build request and no live "
            "instance in any cell",
            len(unplaced),
            "DELETE FROM instance_mappings WHERE cell_id IS NULL AND "
            f"instance_uuid IN ({_quoted(unplaced)})",
            examples=tuple(unplaced[:SHOWN]),
        ))  # fmt: skip
    return out
