"""``demo``: a sample cloud on SQLite and the whole pre-upgrade flow run on it.

It builds, in a directory it names, an API database, cell0, cell1 and a
Placement database at an older release (2025.1), mapped the way
``nova-manage cell_v2`` maps them, and fills them with a cloud that has what
real ones have before an upgrade: soft-deleted instances (some "orphans"
whose children were left live), rows an online migration still has to fix
(instances without ``compute_id``), and Placement out of step with the cell
(compute nodes restored with new uuids: nova-compute's 409; lost allocations).

Then it runs what an operator runs before an upgrade, each step a real
novadb operation: check -> sync -> online-migrate -> archive
--until-complete -> purge --all -> placement-audit -> rebuild-placement ->
check.  Each step's result goes to ``on_step`` as it finishes.

With ``keep``, the cloud as built (before the flow) is copied to
``as-built/`` beside it first, its cell mappings pointing at its own cell
files, so both the broken cloud and the repaired one are there to explore.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from novadb.api import operations as api
from novadb.api.options import OnlineMigrateOptions, RebuildPlacementOptions
from novadb.archive.archive import ArchiveOptions
from novadb.archive.purge import PurgeOptions
from novadb.cells import CELL0_UUID
from novadb.config import Settings, load_settings
from novadb.connections import engine_for
from novadb.errors import BadInput
from novadb.progress import Event, Progress, ignore
from novadb.sample.cloud import CloudSpec, map_cell, populate
from novadb.sample.placement import (
    drop_allocations,
    populate_placement,
    restore_cell_with_new_uuids,
)
from novadb.schema.sync import sync

START_RELEASE = "2025.1"
DEFAULT_INSTANCES = 2000
AS_BUILT = "as-built"


@dataclass(frozen=True)
class DemoStep:
    """One step of the flow: the command it stands for, its result and exit code."""

    command: str
    result: Any
    exit_code: int
    elapsed: float


@dataclass(frozen=True)
class DemoResult:
    """Where the sample cloud lives (if kept) and every step in order."""

    directory: str
    kept: bool
    steps: list[DemoStep] = field(default_factory=list)
    elapsed: float = 0.0
    as_built: str | None = None  # the cloud before the flow (with keep)

    def database_options(self, directory: str | None = None) -> str:
        """The global options that point novadb at the demo's databases (or ``directory``'s)."""
        d = directory or self.directory
        return (
            f"--database sqlite:///{d}/cell1.sqlite --api-database sqlite:///{d}/nova_api.sqlite "
            f"--placement-database sqlite:///{d}/placement.sqlite"
        )


def demo_settings(path: Path) -> Settings:
    """Settings for the demo's four SQLite files."""
    return load_settings(
        database=f"sqlite:///{path / 'cell1.sqlite'}",
        api_database=f"sqlite:///{path / 'nova_api.sqlite'}",
        placement_database=f"sqlite:///{path / 'placement.sqlite'}",
    )


def _map_cells(api_url: str, directory: Path) -> int:
    """cell0 and cell1 in ``cell_mappings``; returns cell1's mapping id."""
    with engine_for(api_url) as engine, engine.begin() as conn:
        map_cell(conn, "cell0", f"sqlite:///{directory / 'cell0.sqlite'}", cell_uuid=CELL0_UUID)
        return map_cell(conn, "cell1", f"sqlite:///{directory / 'cell1.sqlite'}")


def _pending_online_work(settings: Settings, seed: int) -> int:
    """Clear ``compute_id`` of a tenth of the live instances, as before Bobcat."""
    rng = random.Random(seed)
    with engine_for(settings.url("main")) as engine, engine.begin() as conn:
        inst = sa.Table("instances", sa.MetaData(), autoload_with=conn)
        live = [
            int(r[0])
            for r in conn.execute(
                sa.select(inst.c.id).where(inst.c.deleted == 0).order_by(inst.c.id)
            )
        ]
        chosen = sorted(rng.sample(live, max(1, len(live) // 10)))
        conn.execute(sa.update(inst).where(inst.c.id.in_(chosen)).values(compute_id=None))
    return len(chosen)


def build_cloud(path: Path, instances: int, progress: Progress, seed: int = 7) -> Settings:
    """The sample cloud at ``START_RELEASE``, with the problems the flow will fix."""
    settings = demo_settings(path)
    sync(settings, "api", release=START_RELEASE)
    cell_id = _map_cells(settings.url("api"), path)
    sync(settings, release=START_RELEASE)
    # About 40 instances a host, so every flavor fits when allocations are healed.
    spec = CloudSpec(
        instances=instances,
        hosts=max(4, instances // 40),
        deleted_fraction=0.4,
        orphan_fraction=0.1,
        seed=seed,
    )
    with engine_for(settings.url("main")) as cell, engine_for(settings.url("api")) as api:
        made = populate(cell, api, spec, cell_id=cell_id)
    populate_placement(settings, aggregates=2, seed=seed)
    with engine_for(settings.url("main")) as cell:
        moved = restore_cell_with_new_uuids(cell, fraction=0.5, seed=seed)
    lost = drop_allocations(settings, max(1, instances // 50), seed=seed)
    nulls = _pending_online_work(settings, seed)
    progress(
        Event(
            "demo",
            "step",
            f"sample cloud in {path}: {instances} instances ({made.deleted_instances} deleted, "
            f"{made.orphaned_instances} orphans), {len(moved)} compute nodes restored with new "
            f"uuids, {len(lost.consumers)} instances' allocations lost, {nulls} instances "
            "without compute_id",
        )
    )
    return settings


def keep_as_built(path: Path) -> Path:
    """Copy the cloud in ``path`` to ``path/as-built``, its cell mappings repointed there.

    The copy is a cloud of its own: its API database maps cell0 and cell1 to
    the copied files, so novadb run on it never touches the repaired cloud.
    """
    target = path / AS_BUILT
    target.mkdir()
    for source in sorted(path.glob("*.sqlite")):
        shutil.copy2(source, target / source.name)
    with engine_for(f"sqlite:///{target / 'nova_api.sqlite'}") as engine, engine.begin() as conn:
        mappings = sa.Table("cell_mappings", sa.MetaData(), autoload_with=conn)
        for row in conn.execute(sa.select(mappings.c.id, mappings.c.database_connection)):
            url = str(row.database_connection)
            moved = url.replace(f"sqlite:///{path}/", f"sqlite:///{target}/", 1)
            if moved != url:
                conn.execute(
                    sa.update(mappings)
                    .where(mappings.c.id == row.id)
                    .values(database_connection=moved)
                )
    return target


def run_demo(
    directory: str | None = None,
    *,
    keep: bool = False,
    instances: int = DEFAULT_INSTANCES,
    progress: Progress = ignore,
    on_step: Callable[[DemoStep], None] | None = None,
) -> DemoResult:
    """Build the sample cloud in ``directory`` (default: a new temporary one) and run the flow.

    Without ``keep`` the directory is removed at the end, unless the caller
    named it; with ``keep`` the cloud as built is kept too (:func:`keep_as_built`).
    """
    started = time.monotonic()
    named = directory is not None
    path = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="novadb-demo-"))
    path.mkdir(parents=True, exist_ok=True)
    path = path.resolve()
    if any(path.glob("*.sqlite")):
        raise BadInput(
            f"{path} already holds SQLite databases; give the demo a new or empty --dir"
        )
    steps: list[DemoStep] = []
    as_built = None
    try:
        settings = build_cloud(path, instances, progress)
        if keep:
            as_built = str(keep_as_built(path))
        backup = str(path / "placement-backup.json.gz")
        flow: list[tuple[str, Callable[[], Any]]] = [
            ("novadb check", lambda: api.check(settings, progress=progress)),
            ("novadb sync", lambda: api.sync(settings, progress=progress)),
            ("novadb online-migrate --all-cells",
             lambda: api.online_migrate(settings, OnlineMigrateOptions(all_cells=True),
                                        progress=progress)),
            ("novadb archive --until-complete --all-cells",
             lambda: api.archive(settings, ArchiveOptions(until_complete=True, all_cells=True),
                                 progress=progress)),
            ("novadb purge --all --all-cells",
             lambda: api.purge(settings, PurgeOptions(purge_all=True, all_cells=True),
                               progress=progress)),
            ("novadb placement-audit", lambda: api.placement_audit(settings, progress=progress)),
            (f"novadb rebuild-placement --backup {backup}",
             lambda: api.rebuild_placement(settings, RebuildPlacementOptions(backup=backup),
                                           progress=progress)),
            ("novadb check", lambda: api.check(settings, progress=progress)),
        ]  # fmt: skip
        for command, run in flow:
            progress(Event("demo", "step", f"$ {command}"))
            begun = time.monotonic()
            result = run()
            step = DemoStep(command, result, result.exit_code, time.monotonic() - begun)
            steps.append(step)
            if on_step is not None:
                on_step(step)
    finally:
        if not keep and not named:
            shutil.rmtree(path, ignore_errors=True)
    return DemoResult(str(path), keep or named, steps, time.monotonic() - started, as_built)
