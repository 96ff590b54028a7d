"""``check`` on the 20,000-instance bench cell (MariaDB), against archive's dry run.

The cloud is the archive benchmark's cell, mapped as Nova maps it (cell0 and
cell1 in the API database), after an archive of the rows deleted before
mid-year: so shadow tables hold rows (the id-collision checks read them),
soft-deleted rows remain (the backlog and held-back checks count them), and a
hundred legacy ``fixed_ips`` rows pin deleted instances.  The baseline is
``archive --dry-run --all-cells``, which counts only what check's backlog
section counts; the target is check under 5 s.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from novadb.archive.archive import ArchiveOptions, archive, archive_cell
from novadb.cells import CELL0_UUID
from novadb.check.check import CheckResult, check
from novadb.config import Settings, load_settings
from novadb.connections import create_engine
from novadb.sample.cloud import CloudSpec, map_cell, populate
from novadb.schema.sync import sync

from tests.bench.archive import DELETED_FRACTION

CELL1 = "11111111-1111-1111-1111-111111111111"
HALF_WAY = datetime(2024, 7, 1)
PINNED = 100


@dataclass(frozen=True)
class CheckFigures:
    """Medians over repeats, and what the last check found."""

    instances: int
    check_s: float
    dry_run_s: float
    findings: int
    archivable: int
    per_database: dict[str, float]


def build(cell0: str, cell1: str, api: str, placement: str, instances: int) -> Settings:
    """Sync, map cell0 and cell1, fill cell1, archive the first half-year, pin some rows."""
    settings = load_settings(database=cell1, api_database=api, placement_database=placement)
    sync(settings, "api")
    api_engine, engine = create_engine(api), create_engine(cell1)
    with api_engine.begin() as conn:
        map_cell(conn, "cell0", cell0, cell_uuid=CELL0_UUID)
        cell_id = map_cell(conn, "cell1", cell1, cell_uuid=CELL1)
    sync(settings)
    spec = CloudSpec(instances=instances, deleted_fraction=DELETED_FRACTION)
    populate(engine, api_engine, spec, cell_id=cell_id)
    archive_cell(engine, api_engine, ArchiveOptions(until_complete=True, before=HALF_WAY))
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO fixed_ips (address, instance_uuid, allocated, leased, reserved, deleted) "
            "SELECT CONCAT('10.9.', id DIV 250, '.', id MOD 250), uuid, 1, 1, 0, 0 "
            f"FROM instances WHERE deleted != 0 ORDER BY id LIMIT {PINNED}"
        ))  # fmt: skip
    engine.dispose()
    api_engine.dispose()
    return settings


def _timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def measure(
    instances: int, repeat: int, dbs: Callable[[int], AbstractContextManager[list[str]]]
) -> CheckFigures:
    """Build once; then per repeat one check and one archive dry run; the two must agree."""
    with dbs(4) as (cell0, cell1, api, placement):
        settings = build(cell0, cell1, api, placement, instances)
        ours, dry = [], []
        result: CheckResult | None = None
        for _ in range(repeat):
            started = time.perf_counter()
            result = check(settings)
            ours.append(time.perf_counter() - started)
            dry.append(
                _timed(lambda: archive(settings, ArchiveOptions(dry_run=True, all_cells=True)))
            )
        assert result is not None
        counted = archive(settings, ArchiveOptions(dry_run=True, all_cells=True))
        backlog = sum(f.count for f in result.findings if f.code == "archivable-rows")
        held = [f for f in result.findings if f.code == "archive-held-back"]
        if backlog != counted.total or [f.count for f in held] != [PINNED]:
            raise AssertionError(f"check found {backlog} / {held}, dry run {counted.total}")
    return CheckFigures(
        instances,
        statistics.median(ours),
        statistics.median(dry),
        len(result.findings),
        backlog,
        {d.name: d.elapsed for d in result.databases},
    )
