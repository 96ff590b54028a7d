"""``rebuild-placement``: Nova's "Rebuild placement DB" procedure as one safe command.

The documented last resort when Placement and the cells disagree beyond
repair (a restored cell database whose compute nodes carry new uuids under
names Placement already has: nova-compute gets 409 forever, bug 1817833):

1. back up the whole Placement database to a portable file and verify it;
2. refuse, listing why, unless ``--force``, when Placement holds what Nova
   cannot rebuild: resource classes other than VCPU/PCPU/MEMORY_MB/DISK_GB,
   custom traits, nested providers, consumers that are neither instances nor
   migrations, and allocations of migrations in progress or of instances in
   a task state (heal skips those, so they would be lost);
3. drop Placement's tables, recreate the schema at head and insert the
   standard resource classes and traits, as placement-api does at start-up;
4. register one provider per compute node of every cell, with the inventory
   nova-compute would report (``placement_nova.node_inventory``); a PCPU
   inventory, which ``compute_nodes`` does not record, is carried over from
   the old provider of the same uuid or name;
5. heal every instance's allocations; 6. sync aggregates; 7. audit, which
   must come back clean.

``--dry-run`` reads everything and reports what each step would create.
``--restore FILE`` puts a backup back exactly.  Exit codes: 0 rebuilt and the
audit is clean, 1 an error, 2 bad input, 3 rebuilt but heal, sync-aggregates
or the audit found problems, 5 refused (nothing changed; the backup was written).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from novadb import exit_codes
from novadb.cells import Cell
from novadb.config import Settings
from novadb.connections import engine_for
from novadb.errors import BadInput, Interrupted, NovaDbError
from novadb.placement.aggregates import AggregatesResult, sync_aggregates
from novadb.placement.audit import AuditResult, placement_audit
from novadb.placement.backup.database import (
    BackupResult,
    RestoreResult,
    backup_placement,
    drop_placement_tables,
    restore_placement,
)
from novadb.placement.db import (
    MIN_CUSTOM_CLASS_ID,
    NOVA_ROOT_CLASSES,
    PlacementTables,
    class_ids,
    ensure_standard_classes,
    ensure_standard_traits,
    utcnow,
    writer_lock,
)
from novadb.placement.heal import HealOptions, HealResult, heal_allocations
from novadb.placement.nova_side import (
    INVENTORY_FIELDS,
    CloudFacts,
    ComputeNode,
    Inventory,
    cells_for_placement,
    node_inventory,
    read_cloud,
)
from novadb.progress import Event, Progress, ignore
from novadb.schema.sync import sync
from novadb.targets import api_exists, same_database


class RebuildStopped(Interrupted):
    """Ctrl-C: stopped where Placement is usable; the message says what is left to do."""


class RebuildRefused(NovaDbError):
    """Placement holds data Nova cannot rebuild; nothing was changed."""

    exit_code = exit_codes.REBUILD_REFUSED


# The steps in order, defined once: progress, the result table and the charm's
# results number them from this list ("3/7 schema").
STEPS = ("backup", "check", "schema", "providers", "heal", "aggregates", "audit")


@dataclass(frozen=True)
class Step:
    """One step's outcome, for progress and the result table."""

    number: int
    name: str
    summary: str

    @property
    def position(self) -> str:
        """``number/total``, e.g. ``3/7``."""
        return f"{self.number}/{len(STEPS)}"


@dataclass(frozen=True)
class RebuildResult:
    """Every step's summary and the sub-results that carry the details."""

    steps: list[Step] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # what --force overrode
    backup: BackupResult | None = None
    providers: int = 0
    inventories: int = 0
    heal: HealResult | None = None
    aggregates: AggregatesResult | None = None
    audit: AuditResult | None = None
    dry_run: bool = False
    elapsed: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when rebuilt and clean; 3 when heal failed, a host missed its aggregates, or audit."""
        if self.dry_run:
            return exit_codes.REBUILD_REFUSED if self.reasons else exit_codes.REBUILD_DONE
        if (
            (self.heal is not None and self.heal.failed)
            or (self.aggregates is not None and self.aggregates.exit_code)
            or (self.audit is not None and self.audit.findings)
        ):
            return exit_codes.REBUILD_PROBLEMS
        return exit_codes.REBUILD_DONE


def default_backup_path() -> str:
    """``placement-backup-<UTC timestamp>.json.gz`` in the current directory."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"placement-backup-{stamp}.json.gz"


def _check_separate(settings: Settings, cells: list[Cell]) -> None:
    """Never drop tables in a database that is also the API or a cell database."""
    url = settings.placement_url()
    others = [c.url for c in cells]
    if settings.placement_shares_api() or any(same_database(url, o) for o in others):
        raise BadInput(
            "the Placement database is also a Nova database; rebuild-placement drops "
            "Placement's tables, so it needs [placement_database]/connection of its own"
        )


def _read_cloud(cells: list[Cell]) -> CloudFacts:
    """The cells' facts, refusing compute nodes whose names Placement could not hold twice."""
    cloud = read_cloud(cells)
    names = defaultdict(list)
    for node in cloud.nodes:
        names[node.hypervisor_hostname].append(node.uuid)
    clashes = sorted(n for n, uuids in names.items() if len(uuids) > 1)
    if clashes:
        raise NovaDbError(
            f"compute nodes share hypervisor_hostname {', '.join(clashes[:5])}; Placement "
            "needs unique provider names: delete the stale compute_nodes rows first"
        )
    return cloud


def _reasons(conn: Connection, t: PlacementTables, cloud: CloudFacts) -> list[str]:
    """What a rebuild would lose, one line each (empty: nothing)."""
    reasons: list[str] = []
    names = {v: k for k, v in class_ids(conn, t).items()}
    for label, table in (("inventory", t.inventories), ("allocations", t.allocations)):
        query = (
            sa.select(table.c.resource_class_id, sa.func.count())
            .group_by(table.c.resource_class_id)
            .order_by(table.c.resource_class_id)
        )
        for rc, count in conn.execute(query):
            name = names.get(int(rc), str(rc))
            if name not in NOVA_ROOT_CLASSES:
                reasons.append(f"{count} {label} rows of resource class {name}")
    custom = conn.execute(
        sa.select(sa.func.count()).where(t.classes.c.id >= MIN_CUSTOM_CLASS_ID)
    ).scalar_one()
    if custom:
        reasons.append(f"{custom} custom resource classes")
    query = (
        sa.select(sa.func.count())
        .select_from(
            t.provider_traits.join(t.traits, t.traits.c.id == t.provider_traits.c.trait_id)
        )
        .where(t.traits.c.name.like("CUSTOM\\_%", escape="\\"))
    )
    traits = conn.execute(query).scalar_one()
    if traits:
        reasons.append(f"{traits} custom traits set on providers")
    nested = conn.execute(
        sa.select(sa.func.count()).where(t.providers.c.parent_provider_id.is_not(None))
    ).scalar_one()
    if nested:
        reasons.append(f"{nested} nested providers (bandwidth, accelerators, PCI, ...)")
    consumers = {
        str(r[0]) for r in conn.execute(sa.select(t.allocations.c.consumer_id).distinct())
    }
    strangers = consumers - cloud.instances - cloud.busy - cloud.migrations
    if strangers:
        reasons.append(
            f"{len(strangers)} consumers that are neither instances nor migrations "
            f"(e.g. {sorted(strangers)[0]}; `novadb placement-audit --delete` removes orphans)"
        )
    moving = consumers & cloud.active_migrations
    if moving:
        reasons.append(f"{len(moving)} allocations held by migrations in progress")
    busy = consumers & cloud.busy
    if busy:
        reasons.append(f"{len(busy)} instances in a task state (heal skips them)")
    return reasons


def _pcpu_inventory(conn: Connection, t: PlacementTables) -> dict[str, Inventory]:
    """The old PCPU inventory per provider uuid and name (both keys)."""
    ids = class_ids(conn, t)
    if "PCPU" not in ids:
        return {}
    inv, rp = t.inventories, t.providers
    query = (
        sa.select(rp.c.uuid, rp.c.name, *(inv.c[f] for f in INVENTORY_FIELDS))
        .select_from(inv.join(rp, rp.c.id == inv.c.resource_provider_id))
        .where(inv.c.resource_class_id == ids["PCPU"], rp.c.parent_provider_id.is_(None))
    )
    out: dict[str, Inventory] = {}
    for r in conn.execute(query):
        values = Inventory.from_row(r)
        out[str(r.uuid)] = values
        if r.name is not None:
            out.setdefault(str(r.name), values)
    return out


def _register(
    engine: Engine,
    t: PlacementTables,
    settings: Settings,
    nodes: list[ComputeNode],
    pcpu: dict[str, Inventory],
) -> tuple[int, int]:
    """One provider per compute node with its inventory; returns (providers, inventories)."""
    now = utcnow()
    with engine.begin() as conn:
        if nodes:
            conn.execute(
                sa.insert(t.providers),
                [
                    {"uuid": n.uuid, "name": n.hypervisor_hostname, "generation": 1,
                     "created_at": now}
                    for n in nodes
                ],
            )  # fmt: skip
        conn.execute(
            sa.update(t.providers)
            .where(t.providers.c.root_provider_id.is_(None))
            .values(root_provider_id=t.providers.c.id)
        )
        ids = {
            str(u): int(i)
            for u, i in conn.execute(sa.select(t.providers.c.uuid, t.providers.c.id))
        }
        classes = class_ids(conn, t)
        rows: list[dict[str, object]] = []
        for node in nodes:
            for rclass, inv in node_inventory(node, settings).items():
                rows.append(inv.row(ids[node.uuid], classes[rclass], now))
            old = pcpu.get(node.uuid) or pcpu.get(node.hypervisor_hostname)
            if old is not None:
                rows.append(old.row(ids[node.uuid], classes["PCPU"], now))
        for start in range(0, len(rows), 1000):
            conn.execute(sa.insert(t.inventories), rows[start : start + 1000])
    return len(nodes), len(rows)


class _Steps:
    """Records each step's outcome and reports it as progress ("3/7 schema: ...")."""

    def __init__(self, progress: Progress) -> None:
        self.done: list[Step] = []
        self._progress = progress

    def __call__(self, name: str, summary: str) -> None:
        done = Step(STEPS.index(name) + 1, name, summary)
        self.done.append(done)
        self._progress(Event("rebuild-placement", "step", f"{done.position} {name}: {summary}"))


def rebuild_placement(
    settings: Settings,
    *,
    backup: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    progress: Progress = ignore,
    stop: threading.Event | None = None,
) -> RebuildResult:
    """Run the seven steps; see the module docstring.

    ``stop`` (Ctrl-C) is honoured where stopping leaves a usable Placement:
    before the schema is dropped (nothing changed) and between heal's batches
    (providers exist; heal-allocations and sync-aggregates finish the job).
    Steps 3 and 4 always run to the end once started.
    """
    started = time.monotonic()
    cells = cells_for_placement(settings)
    _check_separate(settings, cells)
    step = _Steps(progress)
    path = backup or default_backup_path()
    if not dry_run and Path(path).exists():
        raise BadInput(f"backup file {path} already exists; pass --backup with a new file name")
    cloud = _read_cloud(cells)
    with engine_for(settings.placement_url()) as engine, writer_lock(engine):
        tables = PlacementTables(engine)
        with engine.connect() as conn:
            reasons = _reasons(conn, tables, cloud)
            pcpu = _pcpu_inventory(conn, tables)
        saved = None
        if dry_run:
            step("backup", f"would back up the Placement database to {path}")
        else:
            saved = backup_placement(engine, path, progress=progress)
            rows = sum(saved.rows.values())
            step("backup", f"{rows} rows saved to {saved.path} and verified")
        _check_step(step, reasons, force=force, dry_run=dry_run, path=path)
        if dry_run:
            inventories = _dry_run_steps(step, settings, cloud)
            return RebuildResult(
                step.done, reasons, None, len(cloud.nodes), inventories, dry_run=True,
                elapsed=time.monotonic() - started,
            )  # fmt: skip
        if stop is not None and stop.is_set():
            raise RebuildStopped(
                f"rebuild-placement interrupted before changing anything (backup: {path})"
            )
        providers, inventories = _recreate(step, engine, settings, cloud, pcpu)
        healed, aggregates, checked = _refill(step, settings, progress, stop)
    return RebuildResult(
        step.done, reasons, saved, providers, inventories, healed, aggregates, checked,
        elapsed=time.monotonic() - started,
    )  # fmt: skip


def _check_step(
    step: _Steps, reasons: list[str], *, force: bool, dry_run: bool, path: str
) -> None:
    """Step 2: refuse (or, with ``force``, go on) when Placement holds what Nova cannot rebuild."""
    if reasons and not force:
        if dry_run:
            step("check", "would refuse without --force: " + "; ".join(reasons))
            return
        raise RebuildRefused(
            "rebuild-placement refused, Placement holds what Nova cannot rebuild: "
            + "; ".join(reasons)
            + f". Nothing was changed (backup: {path}); pass --force to rebuild anyway"
        )
    if reasons:
        step("check", "--force: rebuilding without " + "; ".join(reasons))
    else:
        step("check", "nothing Placement holds is beyond what Nova can rebuild")


def _dry_run_steps(step: _Steps, settings: Settings, cloud: CloudFacts) -> int:
    """Steps 3 to 7 as they would go; returns the inventories step 4 would create."""
    inventories = sum(len(node_inventory(n, settings)) for n in cloud.nodes)
    step("schema", "would drop Placement's tables and recreate them at head")
    step("providers", f"would create {len(cloud.nodes)} providers, {inventories} inventories")
    step("heal", f"would heal up to {len(cloud.instances)} instances")
    step("aggregates", "would sync host aggregates")
    step("audit", "would audit the result")
    return inventories


def _recreate(
    step: _Steps,
    engine: Engine,
    settings: Settings,
    cloud: CloudFacts,
    pcpu: dict[str, Inventory],
) -> tuple[int, int]:
    """Steps 3 and 4: drop and recreate the schema, then one provider per compute node."""
    drop_placement_tables(engine)
    sync(settings, "placement")
    tables = PlacementTables(engine)
    with engine.begin() as conn:
        classes = ensure_standard_classes(conn, tables)
        traits = ensure_standard_traits(conn, tables)
    step("schema", f"recreated at head; {classes} resource classes, {traits} traits")
    providers, inventories = _register(engine, tables, settings, cloud.nodes, pcpu)
    step("providers", f"{providers} providers, {inventories} inventories")
    return providers, inventories


def _refill(
    step: _Steps, settings: Settings, progress: Progress, stop: threading.Event | None
) -> tuple[HealResult, AggregatesResult | None, AuditResult]:
    """Steps 5 to 7 under the rebuild's writer lock: heal, sync aggregates, audit."""
    healed = heal_allocations(
        settings, HealOptions(), progress=progress, stop=stop, lock_held=True
    )
    step("heal", f"{healed.processed} instances healed, {len(healed.skipped)} skipped, "
         f"{len(healed.failed)} failed")  # fmt: skip
    if healed.stopped:
        raise RebuildStopped(
            f"rebuild-placement interrupted while healing, after {healed.processed} "
            "instances; providers and inventories are in place: run `novadb "
            "heal-allocations`, then `novadb sync-aggregates` and `novadb placement-audit`"
        )
    aggregates = (
        sync_aggregates(settings, progress=progress, lock_held=True)
        if api_exists(settings)
        else None
    )
    if aggregates is not None:
        step("aggregates", f"{len(aggregates.added)} memberships added")
    else:
        step("aggregates", "no API database: skipped")
    checked = placement_audit(settings, progress=progress)
    step("audit", "clean" if not checked.findings else f"{len(checked.findings)} findings")
    return healed, aggregates, checked


def restore(settings: Settings, path: str, *, progress: Progress = ignore) -> RestoreResult:
    """``rebuild-placement --restore FILE``: put a backup back exactly, under the rebuild lock."""
    _check_separate(settings, cells_for_placement(settings))
    with engine_for(settings.placement_url(), create=True) as engine, writer_lock(engine):
        return restore_placement(engine, path, progress=progress)
