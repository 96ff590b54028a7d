"""What Nova says Placement should hold: compute nodes, instances, migrations, aggregates.

Read from the cell databases (every mapped cell but cell0, or the local
``[database]`` when no cell is mapped) and the API database, with plain
indexed selects.  The Placement operations compare these facts with the
Placement database; nothing here writes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from novadb.cells import Cell, list_cells
from novadb.config import Settings, allocation_ratio
from novadb.connections import engine_for
from novadb.targets import api_exists

# Nova's MigrationList.get_in_progress_by_host_and_node: every other status is live.
FINISHED_MIGRATION = (
    "accepted",
    "confirmed",
    "reverted",
    "error",
    "failed",
    "completed",
    "cancelled",
    "done",
)
# Placement's resource class of each allocation-ratio kind.
_RATIO_KIND = {"VCPU": "cpu", "MEMORY_MB": "ram", "DISK_GB": "disk"}


@dataclass(frozen=True)
class ComputeNode:
    """One live ``compute_nodes`` row: the provider Nova expects in Placement."""

    cell: str
    uuid: str
    host: str
    hypervisor_hostname: str
    vcpus: int
    memory_mb: int
    local_gb: int
    ratios: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    """One inventory record, as nova-compute's resource tracker would report it."""

    total: int
    reserved: int
    min_unit: int
    max_unit: int
    step_size: int
    allocation_ratio: float

    @classmethod
    def from_row(cls, row: Any) -> Inventory:
        """One read from ``inventories`` (a row selecting :data:`INVENTORY_FIELDS` by name)."""
        m = row._mapping
        return cls(
            total=int(m["total"]),
            reserved=int(m["reserved"]),
            min_unit=int(m["min_unit"]),
            max_unit=int(m["max_unit"]),
            step_size=int(m["step_size"]),
            allocation_ratio=float(m["allocation_ratio"]),
        )

    def row(self, provider_id: int, class_id: int, now: datetime) -> dict[str, object]:
        """The ``inventories`` row Placement stores for it."""
        return {
            "resource_provider_id": provider_id,
            "resource_class_id": class_id,
            **asdict(self),
            "created_at": now,
        }


# The ``inventories`` columns that make an :class:`Inventory`, in its field order.
INVENTORY_FIELDS = tuple(f.name for f in fields(Inventory))


def cells_for_placement(settings: Settings) -> list[Cell]:
    """Mapped cells but cell0 (no instance there has a host), else the local database."""
    cells: list[Cell] = []
    if api_exists(settings):
        with engine_for(settings.url("api")) as api:
            cells = [c for c in list_cells(api, settings.main) if not c.is_cell0]
    if not cells:
        cells = [Cell(uuid=None, name=None, url=settings.url("main"))]
    return cells


def reflect(conn: Connection, name: str) -> sa.Table:
    """One cell table as the database has it."""
    return sa.Table(name, sa.MetaData(), autoload_with=conn)


def instances_query(inst: sa.Table, extra: sa.Table) -> sa.Select:
    """Live instances in id order with what heal needs: placement, owner, image, flavor."""
    return (
        sa.select(
            inst.c.id,
            inst.c.uuid,
            inst.c.host,
            inst.c.node,
            inst.c.task_state,
            inst.c.project_id,
            inst.c.user_id,
            inst.c.image_ref,
            extra.c.flavor,
        )
        .select_from(
            inst.outerjoin(
                extra, sa.and_(extra.c.instance_uuid == inst.c.uuid, extra.c.deleted == 0)
            )
        )
        .where(inst.c.deleted == 0)
        .order_by(inst.c.id)
    )


def compute_nodes(conn: Connection, cell: str) -> list[ComputeNode]:
    """Every live compute node of one cell database."""
    cn = reflect(conn, "compute_nodes")
    query = (
        sa.select(
            cn.c.uuid,
            cn.c.host,
            cn.c.hypervisor_hostname,
            cn.c.vcpus,
            cn.c.memory_mb,
            cn.c.local_gb,
            cn.c.cpu_allocation_ratio,
            cn.c.ram_allocation_ratio,
            cn.c.disk_allocation_ratio,
        )
        .where(cn.c.deleted == 0)
        .order_by(cn.c.id)
    )
    return [
        ComputeNode(
            cell=cell,
            uuid=str(r.uuid),
            host=str(r.host or ""),
            hypervisor_hostname=str(r.hypervisor_hostname or ""),
            vcpus=int(r.vcpus or 0),
            memory_mb=int(r.memory_mb or 0),
            local_gb=int(r.local_gb or 0),
            ratios={
                "VCPU": r.cpu_allocation_ratio,
                "MEMORY_MB": r.ram_allocation_ratio,
                "DISK_GB": r.disk_allocation_ratio,
            },
        )
        for r in conn.execute(query)
        if r.uuid
    ]


def _option_int(settings: Settings, name: str, default: int) -> int:
    raw = settings.option("DEFAULT", name)
    try:
        return int(raw) if raw not in (None, "") else default
    except ValueError:
        return default


def node_inventory(node: ComputeNode, settings: Settings) -> dict[str, Inventory]:
    """The root inventory Nova would report for a node, from its row and nova.conf.

    VCPU/MEMORY_MB/DISK_GB totals from ``vcpus``/``memory_mb``/``local_gb``;
    ratios by Nova's rule (:func:`novadb.config.allocation_ratio`: the
    ``[DEFAULT]`` option, else the node's column, else ``initial_*``);
    reserved from ``reserved_host_cpus``/``_memory_mb``/``_disk_mb``;
    min 1, max = total, step 1; a class with total 0 is left out, as
    Placement refuses total 0.
    """
    reserved = {
        "VCPU": _option_int(settings, "reserved_host_cpus", 0),
        "MEMORY_MB": _option_int(settings, "reserved_host_memory_mb", 512),
        "DISK_GB": math.ceil(_option_int(settings, "reserved_host_disk_mb", 0) / 1024),
    }
    totals = {"VCPU": node.vcpus, "MEMORY_MB": node.memory_mb, "DISK_GB": node.local_gb}
    out: dict[str, Inventory] = {}
    for rclass, total in totals.items():
        if total <= 0:
            continue
        ratio, _source = allocation_ratio(settings, _RATIO_KIND[rclass], node.ratios.get(rclass))
        out[rclass] = Inventory(total, reserved[rclass], 1, total, 1, float(ratio))
    return out


@dataclass
class CloudFacts:
    """Compute nodes of every cell, who may hold allocations on each, and the cells' consumers.

    ``consumers``: per node uuid, the live instances on it and the in-progress
    migrations to or from it (the lists Nova's audit uses); ``instances``: live
    instances without a task state, ``busy``: those with one; ``migrations``:
    every migration, ``active_migrations``: those still in progress.
    """

    nodes: list[ComputeNode] = field(default_factory=list)
    consumers: dict[str, set[str]] = field(default_factory=dict)
    instances: set[str] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)
    migrations: set[str] = field(default_factory=set)
    active_migrations: set[str] = field(default_factory=set)


def _read_cell(conn: Connection, label: str, facts: CloudFacts) -> None:
    """One cell's nodes, instances and migrations: three indexed queries."""
    nodes = compute_nodes(conn, label)
    by_node: dict[tuple[str, str], set[str]] = defaultdict(set)
    inst = reflect(conn, "instances")
    query = sa.select(inst.c.uuid, inst.c.host, inst.c.node, inst.c.task_state).where(
        inst.c.deleted == 0
    )
    for uuid, host, node, task in conn.execute(query):
        (facts.busy if task is not None else facts.instances).add(str(uuid))
        if host is not None and node is not None:
            by_node[(host, node)].add(str(uuid))
    mig = reflect(conn, "migrations")
    query = sa.select(
        mig.c.uuid,
        mig.c.status,
        mig.c.source_compute,
        mig.c.source_node,
        mig.c.dest_compute,
        mig.c.dest_node,
    ).where(mig.c.deleted == 0, mig.c.uuid.is_not(None))
    for uuid, status, shost, snode, dhost, dnode in conn.execute(query):
        facts.migrations.add(str(uuid))
        if status is None or status not in FINISHED_MIGRATION:
            facts.active_migrations.add(str(uuid))
            by_node[(shost, snode)].add(str(uuid))
            by_node[(dhost, dnode)].add(str(uuid))
    facts.nodes += nodes
    for node in nodes:
        facts.consumers[node.uuid] = by_node.get((node.host, node.hypervisor_hostname), set())


def read_cloud(cells: list[Cell]) -> CloudFacts:
    """Read every cell once."""
    facts = CloudFacts()
    for cell in cells:
        with engine_for(cell.url) as engine, engine.connect() as conn:
            _read_cell(conn, cell.label, facts)
    return facts
