"""A small multi-cell cloud for the Placement tests: synced, mapped, populated.

``build`` makes API, Placement and cell databases (SQLite files or MariaDB
databases, from the ``new_db`` factory), maps the cells as ``nova-manage
cell_v2`` would (plus a cell0 whose database never exists, so anything that
reads cell0 fails loudly), and fills each cell with ``sample_cloud.populate``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from novadb.cells import CELL0_UUID
from novadb.config import Settings, load_settings
from novadb.connections import create_engine
from novadb.placement.resources import flavor_from_instance_extra, resources_from_flavor
from novadb.sample.cloud import CloudSpec, map_cell, populate
from novadb.schema.sync import sync
from sqlalchemy.engine import Engine

Allocations = dict[str, dict[str, dict[str, int]]]  # consumer -> provider -> class -> used


@dataclass
class Cloud:
    settings: Settings
    api: Engine
    placement: Engine
    cells: dict[str, Engine]  # cell name -> engine
    cell_ids: dict[str, int]  # cell name -> cell_mappings.id

    def rows(self, engine: Engine, sql: str, **params: Any) -> list[Any]:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))

    def run(self, engine: Engine, sql: str, **params: Any) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def close(self) -> None:
        for engine in (self.api, self.placement, *self.cells.values()):
            engine.dispose()


def build(new_db: Callable[[], str], sizes: dict[str, tuple[int, int]]) -> Cloud:
    """Synced API/Placement/cell databases, cells mapped as demo.py does, then populated."""
    api_url, placement_url = new_db(), new_db()
    urls = {name: new_db() for name in sizes}
    first = next(iter(urls.values()))
    settings = load_settings(
        database=first, api_database=api_url, placement_database=placement_url
    )
    sync(settings)  # api, placement and the first cell (nothing is mapped yet)
    for url in list(urls.values())[1:]:
        sync(load_settings(database=url, api_database=api_url), "main", local_cell=True)
    api = create_engine(api_url)
    with api.begin() as conn:
        # cell0's database never exists: reading it would fail.
        unmade = "sqlite:////nonexistent/cell0.sqlite"
        cell_ids = {"cell0": map_cell(conn, "cell0", unmade, cell_uuid=CELL0_UUID)}
        cell_ids |= {name: map_cell(conn, name, url) for name, url in urls.items()}
    cells = {name: create_engine(url) for name, url in urls.items()}
    for seed, (name, (instances, hosts)) in enumerate(sizes.items(), start=1):
        spec = CloudSpec(instances=instances, hosts=hosts, seed=seed)
        populate(cells[name], api, spec, cell_id=cell_ids[name])
    return Cloud(settings, api, create_engine(placement_url), cells, cell_ids)


def make_special(c: Cloud) -> dict[str, list[str]]:
    """Edit live instances of cell1 into Nova's special cases; return their uuids by case."""
    live = [
        str(r[0])
        for r in c.rows(
            c.cells["cell1"], "SELECT uuid FROM instances WHERE deleted = 0 ORDER BY id"
        )
    ]
    cases = {
        "task_state": live[0:3],
        "not_on_host": live[3:4],
        "volume_root": live[4:7],
        "no_image": live[7:8],
    }
    engine = c.cells["cell1"]
    for u in cases["task_state"]:
        c.run(engine, "UPDATE instances SET task_state = 'rebooting' WHERE uuid = :u", u=u)
    for u in cases["not_on_host"]:
        c.run(engine, "UPDATE instances SET host = NULL, node = NULL WHERE uuid = :u", u=u)
    for u in cases["volume_root"]:
        c.run(
            engine,
            "UPDATE block_device_mapping SET destination_type = 'volume', source_type = 'volume' "
            "WHERE instance_uuid = :u AND boot_index = 0",
            u=u,
        )
    for u in cases["no_image"]:
        c.run(engine, "UPDATE instances SET image_ref = '' WHERE uuid = :u", u=u)
    return cases


# -- what Placement should hold, recomputed from the cells ---------------------------------------


def live_nodes(c: Cloud) -> dict[str, tuple[str, str, str]]:
    """Node uuid -> (cell, host, hypervisor_hostname) of every live compute node."""
    out = {}
    for name, engine in c.cells.items():
        sql = "SELECT uuid, host, hypervisor_hostname FROM compute_nodes WHERE deleted = 0"
        out.update({str(u): (name, str(h), str(n)) for u, h, n in c.rows(engine, sql)})
    return out


def expected_allocations(c: Cloud) -> tuple[Allocations, dict[str, tuple[str, str]]]:
    """Allocations of every live hosted instance without a task, and its project/user."""
    allocations: Allocations = {}
    owners: dict[str, tuple[str, str]] = {}
    for engine in c.cells.values():
        node = {
            (str(h), str(n)): str(u)
            for u, h, n in c.rows(
                engine,
                "SELECT uuid, host, hypervisor_hostname FROM compute_nodes WHERE deleted = 0",
            )
        }
        volume = {
            str(r[0])
            for r in c.rows(
                engine,
                "SELECT instance_uuid FROM block_device_mapping WHERE deleted = 0 "
                "AND boot_index = 0 AND destination_type = 'volume'",
            )
        }
        sql = (
            "SELECT i.uuid, i.host, i.node, i.project_id, i.user_id, i.image_ref, e.flavor "
            "FROM instances i JOIN instance_extra e ON e.instance_uuid = i.uuid "
            "WHERE i.deleted = 0 AND e.deleted = 0 AND i.task_state IS NULL "
            "AND i.host IS NOT NULL AND i.node IS NOT NULL"
        )
        for u, host, n, project, user, image, flavor in c.rows(engine, sql):
            bfv = not image or u in volume
            resources = resources_from_flavor(
                flavor_from_instance_extra(flavor), boot_from_volume=bfv
            )
            allocations[str(u)] = {node[(host, n)]: resources}
            owners[str(u)] = (str(project), str(user))
    return allocations, owners


def placement_allocations(c: Cloud) -> Allocations:
    out: Allocations = defaultdict(lambda: defaultdict(dict))
    sql = (
        "SELECT a.consumer_id, rp.uuid, rc.name, a.used FROM allocations a "
        "JOIN resource_providers rp ON rp.id = a.resource_provider_id "
        "JOIN resource_classes rc ON rc.id = a.resource_class_id"
    )
    for consumer, provider, rclass, used in c.rows(c.placement, sql):
        out[str(consumer)][str(provider)][str(rclass)] = int(used)
    return {k: {p: dict(r) for p, r in v.items()} for k, v in out.items()}


def consumers(c: Cloud) -> dict[str, tuple[str, str, str | None, int]]:
    """Consumer uuid -> (project, user, type, generation)."""
    sql = (
        "SELECT c.uuid, p.external_id, u.external_id, t.name, c.generation FROM consumers c "
        "JOIN projects p ON p.id = c.project_id JOIN users u ON u.id = c.user_id "
        "LEFT JOIN consumer_types t ON t.id = c.consumer_type_id"
    )
    return {str(r[0]): (str(r[1]), str(r[2]), r[3], int(r[4])) for r in c.rows(c.placement, sql)}


def generations(c: Cloud) -> dict[str, int]:
    return {
        str(u): int(g)
        for u, g in c.rows(c.placement, "SELECT uuid, generation FROM resource_providers")
    }


def memberships(c: Cloud) -> set[tuple[str, str]]:
    """(Placement aggregate uuid, provider uuid) of every membership."""
    sql = (
        "SELECT pa.uuid, rp.uuid FROM resource_provider_aggregates m "
        "JOIN placement_aggregates pa ON pa.id = m.aggregate_id "
        "JOIN resource_providers rp ON rp.id = m.resource_provider_id"
    )
    return {(str(a), str(p)) for a, p in c.rows(c.placement, sql)}
