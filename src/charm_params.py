"""Typed action params and config, and the progress log the handlers give the library.

The charm's handlers stay thin: ops validates and converts params into these
dataclasses (``event.load_params``), the library does the work with
:class:`ThrottledLog` as its progress callback, and charm_results turns its
result into Juju's flat, kebab-case result keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import ops
from novadb.api.options import Database
from novadb.archive.archive import DEFAULT_BATCH_SIZE, ArchiveOptions
from novadb.archive.purge import PurgeOptions
from novadb.progress import Event


@dataclass(frozen=True)
class CharmConfig:
    """The charm's config options (charmcraft.yaml says what each means)."""

    nova_conf: str = "/etc/nova/nova.conf"
    database_secret: ops.Secret | None = None
    openstack_origin: str = "distro"
    action_managed_upgrade: bool = False
    enable_auto_restarts: bool = True
    database: str = "nova"
    database_user: str = "nova"
    placement_database: str = "placement"


@dataclass(frozen=True)
class SyncParams:
    """Params of the sync action."""

    database: Database = "all"
    revision: str | None = None
    release: str | None = None
    local_cell: bool = False


# The version, online-migrate, null-instance-uuid-scan, placement-audit,
# heal-allocations and sync-aggregates actions' params are the library's
# options classes, name for name and default for default: the charm loads
# those directly (no copy here to drift).


@dataclass(frozen=True)
class ArchiveParams:
    """Params of the archive action (the CLI's options)."""

    batch_size: int | None = ArchiveOptions.batch_size  # none given: see ArchiveOptions
    until_complete: bool = False
    before: str | None = None
    all_cells: bool = False
    task_log: bool = False
    sleep: float = ArchiveOptions.sleep
    purge: bool = False
    max_runtime: float | None = None
    dry_run: bool = False
    parallel: int = ArchiveOptions.parallel


@dataclass(frozen=True)
class PurgeParams:
    """Params of the purge action."""

    before: str | None = None
    all: bool = False
    all_cells: bool = False
    batch_size: int = PurgeOptions.batch_size
    dry_run: bool = False


@dataclass(frozen=True)
class CheckParams:
    """Params of the check action."""

    no_placement: bool = False


@dataclass(frozen=True)
class RebuildPlacementParams:
    """Params of the rebuild-placement action (restore: instead of rebuilding)."""

    backup: str | None = None
    dry_run: bool = False
    force: bool = False
    restore: str | None = None


@dataclass(frozen=True)
class ArchiveDataParams:
    """COU's archive-data: batch-size, bounded by max-runtime."""

    batch_size: int = DEFAULT_BATCH_SIZE  # COU passes its own; nova-manage's meaning
    max_runtime: float = 3000.0  # COU's action bounds each run; the CLI's has no bound


@dataclass(frozen=True)
class PurgeDataParams:
    """COU's purge-data: before, or everything when absent."""

    before: str | None = None


@dataclass(frozen=True)
class OpenstackUpgradeParams:
    """openstack-upgrade takes no params: openstack-origin says where to go."""


_ALWAYS = frozenset({"warning", "failure", "finding"})


class ThrottledLog:
    """Forward progress to ``event.log``: the first event, then at most one a second.

    ``flush`` sends the last event held back, so the final state is always logged.
    """

    def __init__(self, log: Callable[[str], None], interval: float = 1.0) -> None:
        self._log = log
        self._interval = interval
        self._last = float("-inf")
        self._held: str | None = None

    def __call__(self, event: Event) -> None:
        """Log now, or hold the message until a second has passed.

        Warnings, failures and check's findings are logged at once: each is
        one line the operator must not miss, and there are few of them.
        """
        now = time.monotonic()
        if event.kind in _ALWAYS or now - self._last >= self._interval:
            self._log(event.message)
            self._last = now
            self._held = None
        else:
            self._held = event.message

    def flush(self) -> None:
        """Log the message held back, if any."""
        if self._held is not None:
            self._log(self._held)
            self._held = None
