"""A real two-cell cloud with Placement, on SQLite, for the Placement actions' tests.

``make_template`` builds it once per worker with ``tests.integration.clouds.build``
(API, Placement and two populated cells, mapped) plus a cell0 at head (the
charm's status reads every mapped cell), then fills Placement and the host
aggregates as a healthy Nova would have (``sample_placement.populate_placement``).
``copy_cloud`` gives a test its own copy, the cell mappings pointed at it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from novadb.cells import CELL0_UUID
from novadb.config import load_settings
from novadb.connections import create_engine
from novadb.placement.backup.database import PLACEMENT_TABLES
from novadb.sample.placement import populate_placement
from novadb.schema.sync import sync
from ops import testing

from tests.integration.clouds import Cloud, build

CELLS = {"cell1": (40, 3), "cell2": (20, 2)}  # name -> (instances, hosts)
NODES = 5  # live compute nodes, one provider each


def make_template(directory: Path) -> None:
    """API, Placement, cell0 and the CELLS, at head, populated, in ``directory``."""
    names = iter(["nova_api", "placement", *CELLS])
    cloud = build(lambda: f"sqlite:///{directory / next(names)}.sqlite", CELLS)
    # build() maps cell0 to a database that does not exist; the charm's status reads it.
    cell0 = f"sqlite:///{directory / 'cell0'}.sqlite"
    sync(load_settings(database=cell0, api_database=cloud.settings.api), "main", local_cell=True)
    cloud.run(
        cloud.api,
        "UPDATE cell_mappings SET database_connection = :url WHERE uuid = :u",
        url=cell0,
        u=CELL0_UUID,
    )
    populate_placement(cloud.settings, aggregates=2, seed=3)
    cloud.close()


@dataclass
class PlacementCloud:
    """A copy of the template, the nova.conf naming it, and the library's view of it."""

    base: Path
    conf: Path
    cloud: Cloud
    backups: Path  # charm.BACKUP_DIR for this test: not created until the charm needs it

    def state(self) -> testing.State:
        return testing.State(config={"nova-conf": str(self.conf)})

    def rows(self, engine: sa.Engine, sql: str, **params: Any) -> list[Any]:
        return self.cloud.rows(engine, sql, **params)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every Placement table, in a stable order."""
        meta = sa.MetaData()
        meta.reflect(self.cloud.placement, only=list(PLACEMENT_TABLES))
        out = {}
        with self.cloud.placement.connect() as conn:
            for name in PLACEMENT_TABLES:
                table = meta.tables[name]
                query = sa.select(table).order_by(*table.primary_key.columns)
                out[name] = [tuple(r) for r in conn.execute(query)]
        return out

    def memberships(self) -> set[tuple[str, str]]:
        """(Placement aggregate uuid, provider uuid) of every membership."""
        sql = (
            "SELECT pa.uuid, rp.uuid FROM resource_provider_aggregates m "
            "JOIN placement_aggregates pa ON pa.id = m.aggregate_id "
            "JOIN resource_providers rp ON rp.id = m.resource_provider_id"
        )
        return {(str(a), str(p)) for a, p in self.rows(self.cloud.placement, sql)}

    def live_instances(self, cell: str = "cell1") -> list[str]:
        sql = "SELECT uuid FROM instances WHERE deleted = 0 AND host IS NOT NULL ORDER BY id"
        return [str(r[0]) for r in self.rows(self.cloud.cells[cell], sql)]


def copy_cloud(template: Path, base: Path, backups: Path) -> PlacementCloud:
    """The template's databases copied under ``base``, with a nova.conf naming them."""
    directory = base / "db"
    shutil.copytree(template, directory)
    urls = {p.stem: f"sqlite:///{p}" for p in directory.glob("*.sqlite")}
    api = create_engine(urls["nova_api"])
    with api.begin() as conn:
        conn.execute(
            sa.text("UPDATE cell_mappings SET database_connection = replace(database_connection, "
                    ":old, :new)"),
            {"old": str(template), "new": str(directory)},
        )  # fmt: skip
        mappings = conn.execute(sa.text("SELECT id, name FROM cell_mappings")).all()
    conf = base / "nova.conf"
    conf.write_text(
        f"[database]\nconnection = {urls['cell1']}\n\n"
        f"[api_database]\nconnection = {urls['nova_api']}\n\n"
        f"[placement_database]\nconnection = {urls['placement']}\n"
    )
    cell_ids = {str(name): int(i) for i, name in mappings}
    cells = {name: create_engine(urls[name]) for name in CELLS}
    placement = create_engine(urls["placement"])
    cloud = Cloud(load_settings([str(conf)]), api, placement, cells, cell_ids)
    return PlacementCloud(base, conf, cloud, backups)
