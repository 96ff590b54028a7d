"""The options of the operations that had loose keywords: one frozen dataclass per operation.

Each field is the CLI option and action param of the same name (``--dry-run``
/ ``dry-run`` / ``dry_run``), with its default defined here once.  Choices are
``Literal`` types, so a type checker catches a misspelt database.  Internal
coordination (who holds the Placement writer lock, a lock timeout) is not an
option: the operations in :mod:`novadb.api` decide it.

archive, purge and heal-allocations already took an options object; theirs
live beside them (``ArchiveOptions``, ``PurgeOptions``, ``HealOptions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The databases sync and version work on: ``main`` is the cells (the local one
# and, without ``local_cell``, cell0 and every mapped cell).
Database = Literal["all", "api", "main", "placement"]
# The migrations online-migrate runs: the cells', the API's, Placement's, or all.
MigrationSet = Literal["all", "main", "api", "placement"]

ONLINE_BATCH_SIZE = 50


@dataclass(frozen=True)
class SyncOptions:
    """sync: which databases, and where to stop (a revision, a release's heads)."""

    database: Database = "all"
    revision: str | None = None
    release: str | None = None
    local_cell: bool = False
    sql: bool = False  # return the DDL instead of running it


@dataclass(frozen=True)
class VersionOptions:
    """version: which databases to report."""

    database: Database = "all"
    local_cell: bool = False


@dataclass(frozen=True)
class OnlineMigrateOptions:
    """online-migrate: one run of at most ``max_count`` rows, or batches until done."""

    max_count: int | None = None
    batch_size: int = ONLINE_BATCH_SIZE
    database: MigrationSet = "all"
    all_cells: bool = False


@dataclass(frozen=True)
class CheckOptions:
    """check: the Placement audit's findings are part of the report unless turned off."""

    placement: bool = True


@dataclass(frozen=True)
class NullUuidScanOptions:
    """null-instance-uuid-scan: find, or find and delete."""

    delete: bool = False


@dataclass(frozen=True)
class PlacementAuditOptions:
    """placement-audit: delete orphan allocations, or audit one provider only."""

    delete: bool = False
    resource_provider: str | None = None


@dataclass(frozen=True)
class SyncAggregatesOptions:
    """sync-aggregates: report what would be added without writing."""

    dry_run: bool = False


@dataclass(frozen=True)
class RebuildPlacementOptions:
    """rebuild-placement: where the backup goes, and whether to act or only report."""

    backup: str | None = None  # default: placement-backup-<UTC time>.json.gz here
    dry_run: bool = False
    force: bool = False


@dataclass(frozen=True)
class RestorePlacementOptions:
    """rebuild-placement --restore: the backup file to put back."""

    path: str
