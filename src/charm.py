#!/usr/bin/env python3
"""nova-cloud-controller: novadb's operations as Juju actions, on any unit.

Thin by design: each handler loads typed params (charm_params), opens the
databases from nova.conf (or a Juju secret), calls the library with progress
going to ``event.log``, sets the flat results charm_results makes of its
result, and applies its exit-code policy: an outcome that reports (audit
findings, check's blockers) succeeds; one nova-manage treats as an error
fails the action after the results are set.  A library error fails the action
with its one-line message; anything unexpected fails it with a short message
and the traceback goes to the unit log.  Status is computed in one place,
collect-status.  No leader check: COU runs actions on the first unit, and the
library's advisory locks keep two runs apart.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import traceback
from collections.abc import Callable
from pathlib import Path

import ops
from novadb.archive.archive import ArchiveOptions, archive
from novadb.archive.purge import PurgeOptions, purge
from novadb.check.check import check
from novadb.check.placement import placement_findings
from novadb.config import Settings, load_settings
from novadb.errors import BadInput, ConfigError, NovaDbError
from novadb.online.runner import online_migrate
from novadb.placement.aggregates import sync_aggregates
from novadb.placement.audit import placement_audit
from novadb.placement.heal import HealOptions, heal_allocations
from novadb.placement.rebuild import (
    EXIT_PROBLEMS,
    default_backup_path,
    rebuild_placement,
    restore,
)
from novadb.schema.null_uuid import null_instance_uuid_scan
from novadb.schema.releases import (
    RELEASES,
    release_for_nova_version,
    release_index,
    release_label,
    schema_position,
)
from novadb.schema.sync import sync, version

from charm_params import (
    ArchiveDataParams,
    ArchiveParams,
    CharmConfig,
    CheckParams,
    HealAllocationsParams,
    NullUuidParams,
    OnlineMigrateParams,
    PlacementAuditParams,
    PurgeDataParams,
    PurgeParams,
    RebuildPlacementParams,
    SyncAggregatesParams,
    SyncParams,
    ThrottledLog,
    VersionParams,
)
from charm_results import (
    Results,
    aggregates_failure,
    aggregates_results,
    archive_data_results,
    archive_failure,
    archive_results,
    audit_results,
    check_results,
    heal_failure,
    heal_results,
    null_uuid_results,
    online_failure,
    online_results,
    purge_data_results,
    purge_results,
    rebuild_failure,
    rebuild_results,
    restore_results,
    sync_results,
    version_results,
)

logger = logging.getLogger(__name__)

# rebuild-placement's backups: the default file and relative paths live here.
BACKUP_DIR = Path("/var/lib/novadb")

# An action's flat results (charm_results), and the message to fail it with once
# they are set (None or empty: it succeeds).
Outcome = tuple[Results, str | None]

_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def scrub(text: str) -> str:
    """Mask any ``scheme://user:password@`` in text bound for results, logs or status."""
    return _PASSWORD.sub(r"\1***@", text)


class NovaCloudControllerCharm(ops.CharmBase):
    """Actions for Nova's and Placement's databases."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        handlers: dict[str, Callable[[ops.ActionEvent], None]] = {
            "sync": self._on_sync,
            "version": self._on_version,
            "online-migrate": self._on_online_migrate,
            "archive": self._on_archive,
            "purge": self._on_purge,
            "null-instance-uuid-scan": self._on_null_uuid,
            "check": self._on_check,
            "placement-audit": self._on_placement_audit,
            "heal-allocations": self._on_heal_allocations,
            "sync-aggregates": self._on_sync_aggregates,
            "rebuild-placement": self._on_rebuild_placement,
            "archive-data": self._on_archive_data,
            "purge-data": self._on_purge_data,
        }
        for name, handler in handlers.items():
            framework.observe(self.on[name].action, handler)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)
        for event in (self.on.install, self.on.config_changed, self.on.update_status):
            framework.observe(event, self._noop)

    def _noop(self, _event: ops.EventBase) -> None:
        """Status is computed by collect-status after every hook."""

    # -- configuration ---------------------------------------------------
    def _settings(self) -> Settings:
        config = self.load_config(CharmConfig)
        urls: dict[str, str | None] = {}
        if config.database_secret:
            try:
                # ops' load_config already turned the option into a Secret.
                content = config.database_secret.get_content(refresh=True)
            except (ops.SecretNotFoundError, ops.ModelError) as exc:
                raise ConfigError(
                    "database-secret cannot be read; grant it to the application "
                    f"(juju grant-secret <secret> {self.app.name}): {type(exc).__name__}"
                ) from exc
            urls = {
                "database": content.get("connection"),
                "api_database": content.get("api-connection"),
                "placement_database": content.get("placement-connection"),
            }
        files = [config.nova_conf] if Path(config.nova_conf).is_file() else []
        if not files and not (urls.get("database") and urls.get("api_database")):
            raise ConfigError(
                f"no database configured: {config.nova_conf} does not exist and database-secret "
                "does not give both connection and api-connection"
            )
        return load_settings(files, **urls)

    def _installed_release(self) -> int | None:
        """The release on this unit: openstack-origin if set, else the nova-common package."""
        origin = self.load_config(CharmConfig).openstack_origin.strip()
        if origin and origin != "distro":
            name = origin.rsplit("-", 1)[-1] if origin.startswith("cloud:") else origin
            name = name.split("/")[0]
            try:
                return release_index(name)
            except NovaDbError:
                logger.warning("openstack-origin %r names no release novadb knows", origin)
                return None
        try:
            out = subprocess.run(
                ["dpkg-query", "-W", "-f", "${Version}", "nova-common"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return release_for_nova_version(out.stdout.strip())

    # -- running an action -------------------------------------------------
    def _run(self, event: ops.ActionEvent, work: Callable[[ThrottledLog], Outcome]) -> None:
        """Run ``work`` with progress going to ``event.log``; set its results, then fail if told.

        A library error fails the action with its one-line message and no
        results; anything else too, its traceback going to the unit log.
        """
        log = ThrottledLog(lambda message: event.log(scrub(message)))
        try:
            results, failure = work(log)
        except NovaDbError as exc:
            log.flush()
            event.fail(scrub(str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - report, never crash the hook
            log.flush()
            logger.error("action %s failed:\n%s", event.handle.kind, scrub(traceback.format_exc()))
            event.fail(
                f"unexpected error: {type(exc).__name__}: "
                f"{scrub(str(exc).splitlines()[0] if str(exc) else '')} (see juju debug-log)"
            )
            return
        log.flush()
        event.set_results({k: scrub(str(v)) for k, v in results.items()})
        if failure:
            event.fail(scrub(failure))

    def _on_sync(self, event: ops.ActionEvent) -> None:
        params = event.load_params(SyncParams, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            release = params.release
            if release is None and params.revision is None:
                installed = self._installed_release()
                release = RELEASES[installed][0] if installed is not None else None
            result = sync(
                self._settings(),
                params.database,
                revision=params.revision,
                release=release,
                local_cell=params.local_cell,
                progress=log,
            )
            return sync_results(result, release), None

        self._run(event, work)

    def _on_version(self, event: ops.ActionEvent) -> None:
        params = event.load_params(VersionParams, errors="fail")

        def work(_log: ThrottledLog) -> Outcome:
            result = version(self._settings(), params.database, local_cell=params.local_cell)
            return version_results(result), None

        self._run(event, work)

    def _on_online_migrate(self, event: ops.ActionEvent) -> None:
        params = event.load_params(OnlineMigrateParams, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            result = online_migrate(
                self._settings(),
                max_count=params.max_count,
                batch_size=params.batch_size,
                database=params.database,
                all_cells=params.all_cells,
                progress=log,
            )
            # 1 (more to do) is reported as more-to-do; 2, a migration failed, fails.
            failure = online_failure(result) if result.exit_code == 2 else None
            return online_results(result), failure

        self._run(event, work)

    def _on_archive(self, event: ops.ActionEvent) -> None:
        params = event.load_params(ArchiveParams, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            # The action's params are the library's options, name for name.
            options = ArchiveOptions.from_text(**dataclasses.asdict(params))
            result = archive(self._settings(), options, progress=log)
            return archive_results(result), archive_failure(result)

        self._run(event, work)

    def _on_archive_data(self, event: ops.ActionEvent) -> None:
        params = event.load_params(ArchiveDataParams, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            options = ArchiveOptions(
                batch_size=params.batch_size, until_complete=True, max_runtime=params.max_runtime
            )
            result = archive(self._settings(), options, progress=log)
            return archive_data_results(result), archive_failure(result)

        self._run(event, work)

    def _on_purge(self, event: ops.ActionEvent) -> None:
        params = event.load_params(PurgeParams, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            options = PurgeOptions.from_text(
                before=params.before,
                purge_all=params.all,
                all_cells=params.all_cells,
                batch_size=params.batch_size,
                dry_run=params.dry_run,
            )
            return purge_results(purge(self._settings(), options, progress=log)), None

        self._run(event, work)

    def _on_purge_data(self, event: ops.ActionEvent) -> None:
        params = event.load_params(PurgeDataParams, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            options = PurgeOptions.from_text(before=params.before, purge_all=params.before is None)
            return purge_data_results(purge(self._settings(), options, progress=log)), None

        self._run(event, work)

    def _on_null_uuid(self, event: ops.ActionEvent) -> None:
        params = event.load_params(NullUuidParams, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            result = null_instance_uuid_scan(self._settings(), delete=params.delete, progress=log)
            return null_uuid_results(result), None

        self._run(event, work)

    def _on_check(self, event: ops.ActionEvent) -> None:
        params = event.load_params(CheckParams, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            placement = None if params.no_placement else placement_findings
            result = check(self._settings(), progress=log, placement=placement)
            # A report: 0, 1 and 2 all succeed; exit-code carries the verdict.
            return check_results(result), None

        self._run(event, work)

    def _on_placement_audit(self, event: ops.ActionEvent) -> None:
        params = event.load_params(PlacementAuditParams, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            result = placement_audit(
                self._settings(),
                delete=params.delete,
                resource_provider=params.resource_provider,
                progress=log,
            )
            # 0, 3 and 4 report an outcome; an unknown provider (127) raises.
            return audit_results(result), None

        self._run(event, work)

    def _on_heal_allocations(self, event: ops.ActionEvent) -> None:
        params = event.load_params(HealAllocationsParams, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            # The action's params are the library's options, name for name.
            options = HealOptions(**dataclasses.asdict(params))
            result = heal_allocations(self._settings(), options, progress=log)
            # 0, 1 and 4 report an outcome; 2, 3 and 8 (an instance not healed) fail.
            failure = heal_failure(result) if result.failed else None
            return heal_results(result), failure

        self._run(event, work)

    def _on_sync_aggregates(self, event: ops.ActionEvent) -> None:
        params = event.load_params(SyncAggregatesParams, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            result = sync_aggregates(self._settings(), dry_run=params.dry_run, progress=log)
            # 4, 5 and 6 (hosts not resolved) fail; a host with two nodes (1) raises.
            failure = aggregates_failure(result) if result.exit_code else None
            return aggregates_results(result), failure

        self._run(event, work)

    def _on_rebuild_placement(self, event: ops.ActionEvent) -> None:
        params = event.load_params(RebuildPlacementParams, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            if params.restore is not None:
                if params.backup is not None or params.dry_run or params.force:
                    raise BadInput(
                        "restore takes no other rebuild-placement param (backup, dry-run, force)"
                    )
                path = _backup_path(params.restore)
                return restore_results(restore(self._settings(), str(path), progress=log)), None
            path = _backup_path(params.backup or default_backup_path())
            if path.parent == BACKUP_DIR and not params.dry_run:
                BACKUP_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
            result = rebuild_placement(
                self._settings(),
                backup=str(path),
                dry_run=params.dry_run,
                force=params.force,
                progress=log,
            )
            # 0 and a dry run's 5 succeed; 3 (rebuilt, with problems) fails; refusal raises.
            failure = rebuild_failure(result) if result.exit_code == EXIT_PROBLEMS else None
            return rebuild_results(result), failure

        self._run(event, work)

    # -- status --------------------------------------------------------------
    def _on_collect_status(self, event: ops.CollectStatusEvent) -> None:
        try:
            result = version(self._settings())
        except NovaDbError as exc:
            event.add_status(ops.BlockedStatus(scrub(str(exc))[:200]))
            return
        pending = sum(d.pending for d in result.databases)
        plural = "s" if pending != 1 else ""
        summary = "schema at head" if not pending else f"{pending} schema revision{plural} pending"
        installed = self._installed_release()
        if installed is not None:
            positions = {
                schema_position(d.environment, d.current, installed) for d in result.databases
            }
            label = release_label(installed)
            if "behind" in positions:
                summary += f"; behind installed {label}: run the sync action"
            elif "ahead" in positions:
                summary += f"; ahead of installed {label}"
            else:
                summary += f"; matches installed {label}"
        event.add_status(ops.ActiveStatus(summary))


def _backup_path(value: str) -> Path:
    """A backup file named in a param: relative paths are under BACKUP_DIR, not the charm dir."""
    path = Path(value)
    return path if path.is_absolute() else BACKUP_DIR / path


if __name__ == "__main__":  # pragma: no cover
    ops.main(NovaCloudControllerCharm)
