"""Placement benchmarks on MariaDB: heal-allocations and rebuild-placement.

* heal: 10,000 live instances on 500 compute nodes whose allocations are all
  gone.  Baseline in the same run: the same code healing one instance per
  transaction (``--batch-size 1``), the round-trip pattern of nova-manage,
  which makes one Placement API call (one transaction) per instance; it is
  timed on 1,000 instances and reported as instances/s.
* rebuild: 500 compute nodes, 20,000 live instances, Placement populated as
  Nova would have it, then the cell "restored" with new compute node uuids.
  Baseline: restoring the backup rebuild-placement itself took (the same
  data volume written back with no decisions to make).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from novadb.cells import CELL0_UUID
from novadb.config import Settings, load_settings
from novadb.connections import create_engine
from novadb.placement.backup.database import restore_placement
from novadb.placement.heal import HealOptions, heal_allocations
from novadb.placement.rebuild import rebuild_placement
from novadb.sample.cloud import CloudSpec, map_cell, populate
from novadb.sample.placement import (
    drop_allocations,
    populate_placement,
    restore_cell_with_new_uuids,
)
from novadb.schema.sync import sync

Databases = Callable[[int], AbstractContextManager[list[str]]]
NODES = 500


@dataclass(frozen=True)
class HealFigures:
    """heal-allocations at the default batch size against one instance per transaction."""

    instances: int
    novadb_s: float
    baseline_instances: int
    baseline_s: float


@dataclass(frozen=True)
class RebuildFigures:
    """rebuild-placement end to end, and the restore of its own backup."""

    nodes: int
    instances: int
    novadb_s: float
    restore_s: float
    steps: list[str]


def cloud(urls: list[str], instances: int) -> Settings:
    """API, cell1 and Placement synced and mapped; ``instances`` live instances on 500 nodes."""
    api, cell, placement = urls
    settings = load_settings(database=cell, api_database=api, placement_database=placement)
    sync(settings)
    api_engine, cell_engine = create_engine(api), create_engine(cell)
    with api_engine.begin() as conn:
        unmade = "sqlite:////nonexistent/cell0.sqlite"
        map_cell(conn, "cell0", unmade, cell_uuid=CELL0_UUID)
        cell_id = map_cell(conn, "cell1", cell)
    spec = CloudSpec(instances=instances, hosts=NODES, deleted_fraction=0.0, orphan_fraction=0.0)
    populate(cell_engine, api_engine, spec, cell_id=cell_id)
    with cell_engine.begin() as conn:  # hosts big enough for the busiest one's ~70 instances
        conn.execute(
            sa.text("UPDATE compute_nodes SET vcpus = 128, memory_mb = 1048576, local_gb = 8192")
        )
    api_engine.dispose()
    cell_engine.dispose()
    populate_placement(settings, aggregates=10)
    return settings


def measure_heal(instances: int, databases: Databases) -> HealFigures:
    with databases(3) as urls:
        settings = cloud(urls, instances)
        drop_allocations(settings, instances)
        started = time.perf_counter()
        result = heal_allocations(settings)
        novadb_s = time.perf_counter() - started
        assert result.processed == instances and not result.failed, result.failed[:3]
        sample = min(1000, instances)
        drop_allocations(settings, sample, seed=7)
        started = time.perf_counter()
        slow = heal_allocations(settings, HealOptions(batch_size=1))
        baseline_s = time.perf_counter() - started
        assert slow.processed == sample
    return HealFigures(instances, novadb_s, sample, baseline_s)


def measure_rebuild(instances: int, databases: Databases) -> RebuildFigures:
    with databases(3) as urls, tempfile.TemporaryDirectory() as tmp:
        settings = cloud(urls, instances)
        restore_cell_with_new_uuids(create_engine(settings.url("main")), fraction=1.0)
        backup = str(Path(tmp) / "placement.json.gz")
        started = time.perf_counter()
        result = rebuild_placement(settings, backup=backup)
        novadb_s = time.perf_counter() - started
        assert result.exit_code == 0, [s.summary for s in result.steps]
        assert result.heal is not None and result.heal.processed == instances
        placement = create_engine(settings.url("placement"))
        started = time.perf_counter()
        restore_placement(placement, backup)
        restore_s = time.perf_counter() - started
        placement.dispose()
    return RebuildFigures(
        NODES,
        instances,
        novadb_s,
        restore_s,
        [f"{s.name}: {s.summary}" for s in result.steps if s.name != "backup"],
    )
