"""What each online data migration would still do, counted without doing it.

``novadb check`` reports, per migration and database, how many rows
``online-migrate`` would change and how many it would look at but leave (the
rows it reports as unmigratable), so an operator learns before an upgrade
whether the previous release's online migrations are complete.  Each counter
mirrors its migration's candidate query in one ``COUNT``; none reflects a
table, reads a row into Python or writes anything.

Where a migration decides in Python, the counter decides in SQL as closely as
SQL allows.  Two approximations, both towards "pending":

* ``fill_virtual_interface_list``: an instance counts when it has fewer live
  VIF rows than ports in its ``network_info`` (the pre-Newton case the
  migration exists for); one with as many rows, but for other ports or in
  another order, is not counted.
* ``populate_user_id``: a mapping with a cell counts even if its instance has
  left the cell database (the migration then reports it).

A counter whose tables or columns are missing (a schema behind the release
that added them) counts nothing: ``sync`` comes first.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from novadb.config import Settings
from novadb.errors import ConfigError
from novadb.online import compute
from novadb.online.base import Context
from novadb.online.common import FAKE_UUID
from novadb.online.vifs import SOFT_DELETED, _after_marker  # the migration's own marker rule


@dataclass(frozen=True)
class PendingCount:
    """Rows a migration would change, and rows it would look at but leave (with why)."""

    rows: int = 0
    stuck: int = 0
    reason: str = ""


Columns = Mapping[str, Collection[str]]
"""Each table's column names, by table name."""


class _Tables:
    """Tables of one database with the columns a counter needs, or None when absent."""

    def __init__(self, conn: Connection, columns: Columns) -> None:
        self.conn = conn
        self.columns = columns
        self.names = set(columns)

    def get(self, name: str, *columns: str) -> sa.TableClause | None:
        if name not in self.columns:
            return None
        if not set(columns) <= set(self.columns[name]):
            return None
        return sa.table(name, *(sa.column(c) for c in columns))

    def reflected(self, name: str) -> sa.Table:
        return sa.Table(name, sa.MetaData(), autoload_with=self.conn)

    def count(self, table: sa.FromClause, *where: ColumnElement[bool]) -> int:
        query = sa.select(sa.func.count()).select_from(table).where(*where)
        return int(self.conn.execute(query).scalar_one())


Counter = Callable[[_Tables, Settings], PendingCount]


def _uuids(table: str, *, live_only: bool) -> Counter:
    def count(db: _Tables, _settings: Settings) -> PendingCount:
        t = db.get(table, "uuid", "deleted")
        if t is None:
            return PendingCount()
        where = [t.c.uuid.is_(None)] + ([t.c.deleted == 0] if live_only else [])
        return PendingCount(db.count(t, *where))

    return count


def _quota_limits(db: _Tables, _settings: Settings) -> PendingCount:
    rows = 0
    for name in ("quotas", "project_user_quotas"):
        t = db.get(name, "deleted")
        if t is not None:
            rows += db.count(t, t.c.deleted == 0)
    return PendingCount(rows)


def _quota_classes(db: _Tables, _settings: Settings) -> PendingCount:
    t = db.get("quota_classes", "deleted")
    return PendingCount(db.count(t, t.c.deleted == 0)) if t is not None else PendingCount()


def _availability_zones(db: _Tables, _settings: Settings) -> PendingCount:
    t = db.get("instances", "host", "availability_zone")
    if t is None:
        return PendingCount()
    candidates = [t.c.host.is_not(None), t.c.availability_zone.is_(None)]
    return PendingCount(
        db.count(t, *candidates, t.c.host != ""),
        db.count(t, *candidates, t.c.host == ""),
        "host is an empty string",
    )


def _mappings(column: str) -> Counter:
    """queued_for_delete / user_id: mappings without a cell are reported, never migrated."""

    def count(db: _Tables, _settings: Settings) -> PendingCount:
        t = db.get("instance_mappings", column, "cell_id", "project_id")
        if t is None:
            return PendingCount()
        where: list[ColumnElement[bool]] = [t.c[column].is_(None)]
        if column == "user_id":
            where.append(t.c.project_id != FAKE_UUID)
        return PendingCount(
            db.count(t, *where, t.c.cell_id.is_not(None)),
            db.count(t, *where, t.c.cell_id.is_(None)),
            "not mapped to a cell yet (instance still building, or stale)",
        )

    return count


def _empty_ratio(db: _Tables, settings: Settings) -> PendingCount:
    names = [f"{kind}_allocation_ratio" for kind in compute.KINDS]
    t = db.get("compute_nodes", "deleted", *names)
    if t is None:
        return PendingCount()
    empty = {kind: sa.or_(t.c[f"{kind}_allocation_ratio"].is_(None),
                          t.c[f"{kind}_allocation_ratio"] == 0.0)
             for kind in compute.KINDS}  # fmt: skip
    candidates = [t.c.deleted == 0, sa.or_(*empty.values())]
    total = db.count(t, *candidates)
    if not total:
        return PendingCount()
    try:
        wanted = compute.ratios(Context(settings))
    except ConfigError as exc:
        return PendingCount(0, total, str(exc))
    zero = [kind for kind in compute.KINDS if not wanted[kind][0]]
    if not zero:
        return PendingCount(total)
    stuck = db.count(t, *candidates, sa.or_(*(empty[kind] for kind in zero)))
    return PendingCount(total - stuck, stuck, f"[DEFAULT]{wanted[zero[0]][1]} is 0.0")


def _ports(conn: Connection, column: ColumnElement[str]) -> ColumnElement[int]:
    """Entries of a JSON array column, NULL when it is not valid JSON or not an array."""
    if conn.dialect.name == "mysql":
        kind, length, array = sa.func.JSON_TYPE(column), sa.func.JSON_LENGTH(column), "ARRAY"
    else:
        kind, length, array = sa.func.json_type(column), sa.func.json_array_length(column), "array"
    # Nested CASEs: both servers evaluate them lazily, so invalid JSON never reaches kind/length.
    return sa.case((sa.func.json_valid(column) == 1, sa.case((kind == array, length))))


def _virtual_interfaces(db: _Tables, _settings: Settings) -> PendingCount:
    if not {"instances", "instance_info_caches", "virtual_interfaces"} <= db.names:
        return PendingCount()
    caches = db.get("instance_info_caches", "network_info", "deleted")
    if caches is None or not db.count(
        caches,
        caches.c.deleted == 0,
        caches.c.network_info.is_not(None),
        caches.c.network_info.not_in(["", "[]"]),
    ):
        return PendingCount()  # no instance has a port: nothing to compare
    inst = db.reflected("instances")
    cache = db.reflected("instance_info_caches")
    vif = db.reflected("virtual_interfaces")
    ports = _ports(db.conn, cache.c.network_info)
    live_vifs = (
        sa.select(sa.func.count())
        .where(vif.c.instance_uuid == inst.c.uuid, vif.c.deleted == 0)
        .scalar_subquery()
    )
    joined = inst.join(cache, sa.and_(cache.c.instance_uuid == inst.c.uuid, cache.c.deleted == 0))
    candidates = [
        inst.c.deleted == 0,
        sa.or_(inst.c.vm_state != SOFT_DELETED, inst.c.vm_state.is_(None)),
        inst.c.uuid != FAKE_UUID,
        cache.c.network_info.is_not(None),
        cache.c.network_info.not_in(["", "[]"]),
        _after_marker(db.conn, inst, vif),
    ]
    return PendingCount(
        db.count(joined, *candidates, live_vifs < ports),
        db.count(joined, *candidates, sa.or_(ports.is_(None), sa.and_(ports > 0,
                                                                        live_vifs > ports))),
        "network_info is not a JSON list, or lists fewer ports than live VIF rows",
    )  # fmt: skip


def _compute_id(db: _Tables, _settings: Settings) -> PendingCount:
    """Instances without ``compute_id``; the VIF walk's marker instance is no instance.

    The migration (as Nova's) looks at the marker instance (``00000000-...``,
    never scheduled) every run; a check that listed it as unmigratable would
    report, after every ``online-migrate``, a row no one should act on.
    """
    inst = db.get("instances", "compute_id", "host", "node", "uuid")
    nodes = db.get("compute_nodes", "host", "hypervisor_hostname")
    if inst is None or nodes is None:
        return PendingCount()
    has_node = sa.exists().where(
        nodes.c.host == inst.c.host, nodes.c.hypervisor_hostname == inst.c.node
    )
    return PendingCount(
        db.count(inst, inst.c.compute_id.is_(None), has_node),
        db.count(inst, inst.c.compute_id.is_(None), ~has_node, inst.c.uuid != FAKE_UUID),
        "no compute node has the instance's host and node (never scheduled?)",
    )


def _root_providers(db: _Tables, _settings: Settings) -> PendingCount:
    t = db.get("resource_providers", "root_provider_id")
    if t is None:
        return PendingCount()
    return PendingCount(db.count(t, t.c.root_provider_id.is_(None)))


def _incomplete_consumers(db: _Tables, _settings: Settings) -> PendingCount:
    alloc = db.get("allocations", "consumer_id")
    consumers = db.get("consumers", "uuid")
    if alloc is None or consumers is None:
        return PendingCount()
    missing = (
        sa.select(alloc.c.consumer_id)
        .where(~sa.exists().where(consumers.c.uuid == alloc.c.consumer_id))
        .distinct()
        .subquery()
    )
    return PendingCount(db.count(missing))


# Migration name -> (the database whose rows it changes, its counter).  Scope
# ``main`` is counted per cell database; ``fill_virtual_interface_list`` is an
# API migration that walks every cell, so its rows are counted in each cell.
COUNTERS: dict[str, tuple[str, Counter]] = {
    "migrate_quota_limits_to_api_db": ("main", _quota_limits),
    "migrate_quota_classes_to_api_db": ("main", _quota_classes),
    "migration_migrate_to_uuid": ("main", _uuids("migrations", live_only=True)),
    "populate_uuids": ("main", _uuids("block_device_mapping", live_only=False)),
    "populate_missing_availability_zones": ("main", _availability_zones),
    "populate_queued_for_delete": ("api", _mappings("queued_for_delete")),
    "migrate_empty_ratio": ("main", _empty_ratio),
    "fill_virtual_interface_list": ("main", _virtual_interfaces),
    "populate_user_id": ("api", _mappings("user_id")),
    "populate_dev_uuids": ("main", _uuids("pci_devices", live_only=False)),
    "populate_instance_compute_id": ("main", _compute_id),
    "set_root_provider_ids": ("placement", _root_providers),
    "create_incomplete_consumers": ("placement", _incomplete_consumers),
}


def pending(
    conn: Connection, environment: str, settings: Settings, columns: Columns | None = None
) -> dict[str, PendingCount]:
    """Every migration counted in ``environment``'s database, in nova-manage's order.

    ``columns`` is the database's catalogue when the caller has read it already.
    """
    if columns is None:
        multi = sa.inspect(conn).get_multi_columns()
        columns = {name: [c["name"] for c in cols] for (_schema, name), cols in multi.items()}
    db = _Tables(conn, columns)
    return {
        name: count(db, settings)
        for name, (scope, count) in COUNTERS.items()
        if scope == environment
    }
