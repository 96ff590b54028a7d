"""novadb: the database operations of an OpenStack Nova control plane.

The public API is what this module exports (``__all__``): one function per
operation, each ``op(settings, options, *, progress=..., stop=...) -> Result``
(:mod:`novadb.api`), its options and result types, the error hierarchy
(every error carries its one-line message and ``exit_code``) and the exit
codes themselves (:mod:`novadb.exit_codes`)::

    import novadb

    settings = novadb.load_settings(["/etc/nova/nova.conf"])
    result = novadb.archive(settings, novadb.ArchiveOptions(until_complete=True))
    print(result.total, result.exit_code)

Everything else is internal and may change.  Inside, the shared core sits at
the top of the package (configuration, connections, cells and targets,
fan-out, locking, batching, database errors, progress, findings, dates,
exit codes); each domain is a package over it: ``schema``, ``archive``,
``online``, ``placement`` and ``check``; ``api`` holds the public verbs;
``render`` turns results into text; ``cli`` is the ``novadb`` command;
``sample`` builds sample clouds and the demo.  The import rules between them
are contracts in ``pyproject.toml``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

from novadb import exit_codes
from novadb.api.operations import (
    archive,
    check,
    heal_allocations,
    null_instance_uuid_scan,
    online_migrate,
    placement_audit,
    purge,
    rebuild_placement,
    restore_placement,
    sync,
    sync_aggregates,
    version,
)
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
from novadb.archive.archive import ArchiveOptions, ArchiveResult, ShadowConflict
from novadb.archive.purge import PurgeOptions, PurgeResult
from novadb.check.check import CheckResult
from novadb.config import Settings, load_settings
from novadb.errors import (
    AccessDenied,
    BadArgument,
    BadInput,
    BlockerFound,
    ConfigError,
    DatabaseFault,
    DatabaseUnreachable,
    Interrupted,
    LockLost,
    LockTimeout,
    NovaDbError,
    PlacementNotConfigured,
    SchemaError,
    UnknownRevision,
)
from novadb.findings import Finding
from novadb.online.runner import OnlineResult
from novadb.placement.aggregates import AggregatesResult, TooManyComputes
from novadb.placement.audit import AuditResult, UnknownProvider
from novadb.placement.backup.database import RestoreResult
from novadb.placement.heal import HealOptions, HealResult
from novadb.placement.rebuild import RebuildRefused, RebuildResult, RebuildStopped
from novadb.placement.resources import UnsupportedFlavor
from novadb.progress import Event, Progress
from novadb.schema.null_uuid import NullUuidResult
from novadb.schema.sync import SyncResult, VersionResult

try:
    __version__ = _distribution_version("novadb")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AccessDenied",
    "AggregatesResult",
    "ArchiveOptions",
    "ArchiveResult",
    "AuditResult",
    "BadArgument",
    "BadInput",
    "BlockerFound",
    "CheckOptions",
    "CheckResult",
    "ConfigError",
    "DatabaseFault",
    "DatabaseUnreachable",
    "Event",
    "Finding",
    "HealOptions",
    "HealResult",
    "Interrupted",
    "LockLost",
    "LockTimeout",
    "NovaDbError",
    "NullUuidResult",
    "NullUuidScanOptions",
    "OnlineMigrateOptions",
    "OnlineResult",
    "PlacementAuditOptions",
    "PlacementNotConfigured",
    "Progress",
    "PurgeOptions",
    "PurgeResult",
    "RebuildPlacementOptions",
    "RebuildRefused",
    "RebuildResult",
    "RebuildStopped",
    "RestorePlacementOptions",
    "RestoreResult",
    "SchemaError",
    "Settings",
    "ShadowConflict",
    "SyncAggregatesOptions",
    "SyncOptions",
    "SyncResult",
    "TooManyComputes",
    "UnknownProvider",
    "UnknownRevision",
    "UnsupportedFlavor",
    "VersionOptions",
    "VersionResult",
    "__version__",
    "archive",
    "check",
    "exit_codes",
    "heal_allocations",
    "load_settings",
    "null_instance_uuid_scan",
    "online_migrate",
    "placement_audit",
    "purge",
    "rebuild_placement",
    "restore_placement",
    "sync",
    "sync_aggregates",
    "version",
]
