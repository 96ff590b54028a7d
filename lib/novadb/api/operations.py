"""Every operation in one shape: ``op(settings, options, *, progress=..., stop=...) -> Result``.

These are the verbs the CLI and the charm call, as Alembic's ``command.py``
holds its user-facing verbs: each resolves its options and hands off to the
domain function that does the work.  The domain functions keep the keywords
that other operations need internally (``lock_held`` when rebuild-placement
runs heal and sync-aggregates under its own writer lock, a lock timeout), so
those never show in the public signature.

``stop`` is a :class:`threading.Event`.  Long operations (online-migrate,
archive, purge, heal-allocations, rebuild-placement) check it between
batches and return (or raise) at a safe point; the others are short or have
no safe midpoint, so they honour it only before they begin, raising
:class:`~novadb.errors.Interrupted` with nothing done.
"""

from __future__ import annotations

import threading

from novadb.api.options import (
    CheckOptions,
    NullUuidScanOptions,
    OnlineMigrateOptions,
    PlacementAuditOptions,
    RebuildPlacementOptions,
    RestorePlacementOptions,
    SyncAggregatesOptions,
    SyncOptions,
    VersionOptions,
)
from novadb.archive import archive as _archive
from novadb.archive import purge as _purge
from novadb.archive.archive import ArchiveOptions, ArchiveResult
from novadb.archive.purge import PurgeOptions, PurgeResult
from novadb.check import check as _check
from novadb.check.check import CheckResult
from novadb.check.placement import placement_findings
from novadb.config import Settings
from novadb.errors import Interrupted
from novadb.online import runner as _online
from novadb.online.runner import OnlineResult
from novadb.placement import aggregates as _aggregates
from novadb.placement import audit as _audit
from novadb.placement import heal as _heal
from novadb.placement import rebuild as _rebuild
from novadb.placement.aggregates import AggregatesResult
from novadb.placement.audit import AuditResult
from novadb.placement.backup.database import RestoreResult
from novadb.placement.heal import HealOptions, HealResult
from novadb.placement.rebuild import RebuildResult
from novadb.progress import Progress, ignore
from novadb.schema import null_uuid as _null_uuid
from novadb.schema import sync as _sync
from novadb.schema.null_uuid import NullUuidResult
from novadb.schema.sync import SyncResult, VersionResult

Stop = threading.Event | None


def _not_stopped(stop: Stop, operation: str) -> None:
    if stop is not None and stop.is_set():
        raise Interrupted(f"{operation} interrupted before it began; nothing was done")


def sync(
    settings: Settings,
    options: SyncOptions | None = None,
    *,
    progress: Progress = ignore,
    stop: Stop = None,
) -> SyncResult:
    """Apply Nova's and Placement's schema migrations (a migration is never cut in half)."""
    o = options or SyncOptions()
    _not_stopped(stop, "sync")
    return _sync.sync(
        settings,
        o.database,
        revision=o.revision,
        release=o.release,
        local_cell=o.local_cell,
        sql=o.sql,
        progress=progress,
    )


def version(
    settings: Settings,
    options: VersionOptions | None = None,
    *,
    progress: Progress = ignore,
    stop: Stop = None,
) -> VersionResult:
    """Each database's schema revision (read-only; ``progress`` has nothing to report)."""
    del progress
    o = options or VersionOptions()
    _not_stopped(stop, "version")
    return _sync.version(settings, o.database, local_cell=o.local_cell)


def online_migrate(
    settings: Settings,
    options: OnlineMigrateOptions | None = None,
    *,
    progress: Progress = ignore,
    stop: Stop = None,
) -> OnlineResult:
    """Run Nova's and Placement's online data migrations; ``stop`` ends between batches."""
    o = options or OnlineMigrateOptions()
    return _online.online_migrate(
        settings,
        max_count=o.max_count,
        batch_size=o.batch_size,
        database=o.database,
        all_cells=o.all_cells,
        progress=progress,
        stop=stop,
    )


def archive(
    settings: Settings,
    options: ArchiveOptions | None = None,
    *,
    progress: Progress = ignore,
    stop: Stop = None,
) -> ArchiveResult:
    """Move soft-deleted rows to the shadow tables; ``stop`` ends between batches."""
    return _archive.archive(settings, options or ArchiveOptions(), progress=progress, stop=stop)


def purge(
    settings: Settings,
    options: PurgeOptions,
    *,
    progress: Progress = ignore,
    stop: Stop = None,
) -> PurgeResult:
    """Delete shadow rows (``before`` a date, or ``purge_all``); ``stop`` ends between batches."""
    return _purge.purge(settings, options, progress=progress, stop=stop)


def check(
    settings: Settings,
    options: CheckOptions | None = None,
    *,
    progress: Progress = ignore,
    stop: Stop = None,
) -> CheckResult:
    """The read-only pre-upgrade report, the Placement audit's findings included by default."""
    o = options or CheckOptions()
    _not_stopped(stop, "check")
    placement = placement_findings if o.placement else None
    return _check.check(settings, progress=progress, placement=placement)


def null_instance_uuid_scan(
    settings: Settings,
    options: NullUuidScanOptions | None = None,
    *,
    progress: Progress = ignore,
    stop: Stop = None,
) -> NullUuidResult:
    """Find (and with ``delete``, delete) rows whose instance uuid is NULL."""
    o = options or NullUuidScanOptions()
    _not_stopped(stop, "null-instance-uuid-scan")
    return _null_uuid.null_instance_uuid_scan(settings, delete=o.delete, progress=progress)


def placement_audit(
    settings: Settings,
    options: PlacementAuditOptions | None = None,
    *,
    progress: Progress = ignore,
    stop: Stop = None,
) -> AuditResult:
    """Compare Placement with the cells (and with ``delete``, delete orphan allocations)."""
    o = options or PlacementAuditOptions()
    _not_stopped(stop, "placement-audit")
    return _audit.placement_audit(
        settings, delete=o.delete, resource_provider=o.resource_provider, progress=progress
    )


def heal_allocations(
    settings: Settings,
    options: HealOptions | None = None,
    *,
    progress: Progress = ignore,
    stop: Stop = None,
) -> HealResult:
    """Write the allocations Placement lacks; ``stop`` ends between batches."""
    return _heal.heal_allocations(settings, options, progress=progress, stop=stop)


def sync_aggregates(
    settings: Settings,
    options: SyncAggregatesOptions | None = None,
    *,
    progress: Progress = ignore,
    stop: Stop = None,
) -> AggregatesResult:
    """Put each compute node's provider into its host aggregates' Placement aggregates."""
    o = options or SyncAggregatesOptions()
    _not_stopped(stop, "sync-aggregates")
    return _aggregates.sync_aggregates(settings, dry_run=o.dry_run, progress=progress)


def rebuild_placement(
    settings: Settings,
    options: RebuildPlacementOptions | None = None,
    *,
    progress: Progress = ignore,
    stop: Stop = None,
) -> RebuildResult:
    """Back Placement up, then rebuild it from the cells; ``stop`` honoured at safe points only."""
    o = options or RebuildPlacementOptions()
    return _rebuild.rebuild_placement(
        settings,
        backup=o.backup,
        dry_run=o.dry_run,
        force=o.force,
        progress=progress,
        stop=stop,
    )


def restore_placement(
    settings: Settings,
    options: RestorePlacementOptions,
    *,
    progress: Progress = ignore,
    stop: Stop = None,
) -> RestoreResult:
    """Put a rebuild-placement backup back exactly (one transaction: nothing to stop between)."""
    _not_stopped(stop, "rebuild-placement --restore")
    return _rebuild.restore(settings, options.path, progress=progress)


OPERATIONS = (
    sync,
    version,
    online_migrate,
    archive,
    purge,
    check,
    null_instance_uuid_scan,
    placement_audit,
    heal_allocations,
    sync_aggregates,
    rebuild_placement,
    restore_placement,
)
