#!/usr/bin/env python3
"""nova-cloud-controller: novadb's operations as Juju actions, and Nova's database role.

Thin by design.  Each action handler loads typed params (charm_params), opens
the databases (credentials: the shared-db relation, else a user secret, else
nova.conf), calls the library with progress going to ``event.log``, sets the
flat results charm_results makes of its result, and applies its exit-code
policy: an outcome that reports (audit findings, check's blockers) succeeds;
one nova-manage treats as an error fails the action after the results are
set.  A library error fails the action with its one-line message; anything
unexpected fails it with a short message and the traceback goes to the unit
log.  No leader check for actions: COU runs them on the first unit, and the
library's advisory locks keep two runs apart.

The lifecycle is the classic charm's: install nova-common from
``openstack-origin`` (nova_package), and when that release moves up, upgrade
the package and, on the leader, bring the databases to it (upgrade).  Status
is computed in one place, collect-status, from a cached database answer.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

import ops
from novadb import dberrors, exit_codes
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
from novadb.archive.archive import ArchiveOptions
from novadb.archive.purge import PurgeOptions
from novadb.config import Settings
from novadb.connections import probe
from novadb.errors import BadInput, ConfigError, NovaDbError
from novadb.placement.heal import HealOptions
from novadb.placement.rebuild import default_backup_path
from novadb.schema.releases import RELEASES, release_label
from sqlalchemy.exc import DBAPIError

import credentials
import unit_status
from charm_params import (
    ArchiveDataParams,
    ArchiveParams,
    CharmConfig,
    CheckParams,
    PurgeDataParams,
    PurgeParams,
    RebuildPlacementParams,
    SyncParams,
    ThrottledLog,
)
from charm_results import (
    Results,
    aggregates_failure,
    aggregates_results,
    archive_data_results,
    archive_failure,
    archive_results,
    as_text,
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
    upgrade_results,
    version_results,
)
from installed import Installed
from nova_package import AptPackages, Origin, Packages, parse_origin
from upgrade import UpgradeFailed, migrate_databases

logger = logging.getLogger(__name__)

# rebuild-placement's backups: the default file and relative paths live here.
BACKUP_DIR = Path("/var/lib/novadb")
# How long collect-status may spend reaching the API database, and how long its
# answer is reused by hooks that change nothing it depends on.
PROBE_TIMEOUT = 3.0
STATUS_TTL = 600.0

# An action's flat results (charm_results), and the message to fail it with once
# they are set (None or empty: it succeeds).
Outcome = tuple[Results, str | None]

_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def scrub(text: str) -> str:
    """Mask any ``scheme://user:password@`` in text bound for results, logs or status."""
    return _PASSWORD.sub(r"\1***@", text)


class NovaCloudControllerCharm(ops.CharmBase):
    """Nova's database role: the package, the upgrade's database steps, and the actions."""

    # The apt boundary; tests replace it with a fake.
    packages: Packages = AptPackages()
    _stored = ops.StoredState()

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self._stored.set_default(
            problem="",  # openstack-origin or the package: blocks the unit
            failure="",  # the leader's database steps failed: blocks until resumed
            failed_release=-1,
            package_release=-1,  # nova-common's release as this unit last saw it
            migrated_release=-1,  # the release the leader last brought the databases to
            db_status=None,  # [level, message, wall-clock time checked]
        )
        self._refresh = False
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
            "openstack-upgrade": self._on_openstack_upgrade,
        }
        for name, handler in handlers.items():
            framework.observe(self.on[name].action, handler)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)
        framework.observe(self.on.install, self._on_install)
        framework.observe(self.on.config_changed, self._on_config_changed)
        framework.observe(self.on.upgrade_charm, self._on_config_changed)
        framework.observe(self.on.leader_elected, self._on_settled)
        framework.observe(self.on.update_status, self._on_settled)
        framework.observe(self.on.secret_changed, self._on_changed)
        relation = self.on[credentials.RELATION]
        framework.observe(relation.relation_joined, self._on_shared_db_joined)
        for event in (relation.relation_changed, relation.relation_departed,
                      relation.relation_broken):  # fmt: skip
            framework.observe(event, self._on_changed)

    # -- configuration ---------------------------------------------------
    def _config(self) -> CharmConfig:
        return self.load_config(CharmConfig)

    def _credentials(self) -> credentials.Credentials:
        """The settings to run with: shared-db, then database-secret, then nova.conf."""
        config = self._config()
        secret = None
        if config.database_secret:
            try:
                # ops' load_config already turned the option into a Secret.
                secret = config.database_secret.get_content(refresh=True)
            except (ops.SecretNotFoundError, ops.ModelError) as exc:
                raise ConfigError(
                    "database-secret cannot be read; grant it to the application "
                    f"(juju grant-secret <secret> {self.app.name}): {type(exc).__name__}"
                ) from exc
        return credentials.resolve(self._shared_db(config), secret, config.nova_conf)

    def _shared_db(self, config: CharmConfig) -> credentials.SharedDbAnswer | None:
        relation = self.model.get_relation(credentials.RELATION)
        if relation is None:
            return None
        answers: list[Mapping[str, str]] = [dict(relation.data[u]) for u in relation.units]
        if relation.app is not None:
            answers.append(dict(relation.data[relation.app]))
        return credentials.read_shared_db(answers, self.unit.name, self._requested(config))

    @staticmethod
    def _requested(config: CharmConfig) -> credentials.Requested:
        return credentials.Requested(
            config.database, config.database_user, config.placement_database.strip()
        )

    def _settings(self) -> Settings:
        return self._credentials().settings

    def _origin(self) -> Origin:
        return parse_origin(self._config().openstack_origin, self.packages.series())

    def _installed_release(self) -> int | None:
        """The release of the nova-common installed on this unit (None: not installed)."""
        installed = self.packages.installed()
        return installed.release if installed is not None else None

    # -- lifecycle ---------------------------------------------------------
    def _on_install(self, _event: ops.EventBase) -> None:
        self._refresh = True
        self._reconcile(upgrade=False)

    def _on_config_changed(self, _event: ops.EventBase) -> None:
        """openstack-origin may have moved: upgrade unless the operator drives it by action."""
        self._refresh = True
        self._request_databases()
        self._reconcile(upgrade=not self._config().action_managed_upgrade)

    def _on_settled(self, _event: ops.EventBase) -> None:
        """update-status and leader-elected: notice a package upgraded behind our back."""
        self._refresh = True
        self._reconcile(upgrade=False)

    def _on_changed(self, _event: ops.EventBase) -> None:
        """The credentials may have changed: look at the databases again."""
        self._refresh = True
        self._reconcile(upgrade=False)

    def _on_shared_db_joined(self, _event: ops.EventBase) -> None:
        self._request_databases()

    def _request_databases(self) -> None:
        """Ask the shared-db provider for our databases (each unit for its own address)."""
        relation = self.model.get_relation(credentials.RELATION)
        if relation is None:
            return
        binding = self.model.get_binding(relation)
        address = binding.network.ingress_address if binding is not None else None
        if address is None:
            return
        requested = self._requested(self._config())
        relation.data[self.unit].update(credentials.shared_db_request(str(address), requested))

    def _reconcile(self, *, upgrade: bool) -> None:
        """Install nova-common, upgrade it when allowed, then (leader) migrate the databases.

        Never raises: what goes wrong is stored and shown by collect-status.
        """
        try:
            installed = self._install(self._origin(), self.packages.installed(), upgrade=upgrade)
        except NovaDbError as exc:
            self._stored.problem = scrub(str(exc))
            return
        self._stored.problem = ""
        if installed.release is None:
            return
        # A release this unit has not seen before (installed, upgraded by us or
        # behind our back) gets the full database steps; otherwise the leader
        # only catches up a schema that is behind (a new cloud, a new leader).
        changed = installed.release != self._stored.package_release
        self._stored.package_release = installed.release
        if self.unit.is_leader():
            self._migrate(installed.release, full=changed, resume=False)

    def _install(self, origin: Origin, installed: Installed | None, *, upgrade: bool) -> Installed:
        """Install nova-common if missing; with ``upgrade``, move it up to origin's release.

        Never down: an origin older than the installed release is refused.
        The hooks (``upgrade`` unless action-managed) and the openstack-upgrade
        action share this.
        """
        if upgrade and installed is not None:
            self._refuse_downgrade(installed, origin)
        if installed is None or (upgrade and self._behind(installed, origin)):
            self._maintenance(f"installing nova-common from {origin.text}")
            installed = self.packages.install(origin)
        return installed

    @staticmethod
    def _behind(installed: Installed, origin: Origin) -> bool:
        return installed.release is None or installed.release < origin.release

    @staticmethod
    def _refuse_downgrade(installed: Installed, origin: Origin) -> None:
        if installed.release is not None and origin.release < installed.release:
            raise ConfigError(
                f"openstack-origin {origin.text} ({release_label(origin.release)}) is older than "
                f"the installed nova-common {installed.version} "
                f"({release_label(installed.release)}): going back a release is not supported; "
                "set openstack-origin to that release or a newer one"
            )

    def _migrate(self, release: int, *, full: bool, resume: bool) -> None:
        """The leader's database steps for ``release``, once; a failure waits for the action."""
        if release <= self._stored.migrated_release:
            return
        if not resume and self._stored.failed_release == release:
            return  # failed before: the operator resumes with the openstack-upgrade action
        try:
            settings = self._settings()
        except NovaDbError:
            return  # no database yet: collect-status says what it waits for
        self._refresh = True
        log = ThrottledLog(lambda message: logger.info("%s", scrub(message)), interval=5.0)
        try:
            migrate_databases(
                settings,
                release,
                status=self._maintenance,
                log=log,
                unit=f"{self.app.name}/leader",
                only_if_behind=not full,
            )
        except UpgradeFailed as exc:
            self._stored.failure = scrub(str(exc))
            self._stored.failed_release = release
            logger.error("%s", self._stored.failure)
            return
        self._stored.failure = ""
        self._stored.failed_release = -1
        self._stored.migrated_release = release

    def _maintenance(self, message: str) -> None:
        self.unit.status = ops.MaintenanceStatus(scrub(message))

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
        event.set_results({k: scrub(as_text(v)) for k, v in results.items()})
        if failure:
            event.fail(scrub(failure))

    def _on_sync(self, event: ops.ActionEvent) -> None:
        params = event.load_params(SyncParams, errors="fail")
        self._refresh = True  # the schema may change: status looks again

        def work(log: ThrottledLog) -> Outcome:
            release = params.release
            if release is None and params.revision is None:
                installed = self._installed_release()
                release = RELEASES[installed][0] if installed is not None else None
            options = SyncOptions(
                database=params.database,
                revision=params.revision,
                release=release,
                local_cell=params.local_cell,
            )
            result = sync(self._settings(), options, progress=log)
            return sync_results(result, release), None

        self._run(event, work)

    def _on_version(self, event: ops.ActionEvent) -> None:
        options = event.load_params(VersionOptions, errors="fail")

        def work(_log: ThrottledLog) -> Outcome:
            result = version(self._settings(), options)
            return version_results(result), None

        self._run(event, work)

    def _on_online_migrate(self, event: ops.ActionEvent) -> None:
        options = event.load_params(OnlineMigrateOptions, errors="fail")
        self._refresh = True  # the schema may change: status looks again

        def work(log: ThrottledLog) -> Outcome:
            result = online_migrate(self._settings(), options, progress=log)
            # 1 (more to do) is reported as more-to-do; 2, a migration failed, fails.
            failure = (
                online_failure(result) if result.exit_code == exit_codes.ONLINE_FAILED else None
            )
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
        options = event.load_params(NullUuidScanOptions, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            result = null_instance_uuid_scan(self._settings(), options, progress=log)
            return null_uuid_results(result), None

        self._run(event, work)

    def _on_check(self, event: ops.ActionEvent) -> None:
        params = event.load_params(CheckParams, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            options = CheckOptions(placement=not params.no_placement)
            result = check(self._settings(), options, progress=log)
            # A report: 0, 1 and 2 all succeed; exit-code carries the verdict.
            return check_results(result), None

        self._run(event, work)

    def _on_placement_audit(self, event: ops.ActionEvent) -> None:
        options = event.load_params(PlacementAuditOptions, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            result = placement_audit(self._settings(), options, progress=log)
            # 0, 3 and 4 report an outcome; an unknown provider (127) raises.
            return audit_results(result), None

        self._run(event, work)

    def _on_heal_allocations(self, event: ops.ActionEvent) -> None:
        options = event.load_params(HealOptions, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            result = heal_allocations(self._settings(), options, progress=log)
            # 0, 1 and 4 report an outcome; 2, 3 and 8 (an instance not healed) fail.
            failure = heal_failure(result) if result.failed else None
            return heal_results(result), failure

        self._run(event, work)

    def _on_sync_aggregates(self, event: ops.ActionEvent) -> None:
        options = event.load_params(SyncAggregatesOptions, errors="fail")

        def work(log: ThrottledLog) -> Outcome:
            result = sync_aggregates(self._settings(), options, progress=log)
            # 4, 5 and 2 (hosts not resolved) fail; a host with two nodes (1) raises.
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
                options = RestorePlacementOptions(str(path))
                restored = restore_placement(self._settings(), options, progress=log)
                return restore_results(restored), None
            path = _backup_path(params.backup or default_backup_path())
            if path.parent == BACKUP_DIR and not params.dry_run:
                BACKUP_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
            options = RebuildPlacementOptions(
                backup=str(path), dry_run=params.dry_run, force=params.force
            )
            result = rebuild_placement(self._settings(), options, progress=log)
            # 0 and a dry run's 5 succeed; 3 (rebuilt, with problems) fails; refusal raises.
            failure = (
                rebuild_failure(result)
                if result.exit_code == exit_codes.REBUILD_PROBLEMS
                else None
            )
            return rebuild_results(result), failure

        self._run(event, work)

    def _on_openstack_upgrade(self, event: ops.ActionEvent) -> None:
        """Upgrade this unit to openstack-origin's release now (action-managed-upgrade).

        On the leader it also runs, or resumes after a failure, the database
        steps.  Also the way out of a failed upgrade once its cause is fixed.
        """

        def work(_log: ThrottledLog) -> Outcome:
            before = self.packages.installed()
            installed = self._install(self._origin(), before, upgrade=True)
            self._stored.problem = ""
            if installed.release is None:
                raise ConfigError(
                    f"nova-common {installed.version} is a release novadb does not know"
                )
            self._stored.package_release = installed.release
            self.unit.set_workload_version(installed.version)
            migrated = None
            if self.unit.is_leader():
                self._stored.migrated_release = min(
                    self._stored.migrated_release, installed.release - 1
                )
                self._migrate(installed.release, full=True, resume=True)
                if self._stored.failure:
                    raise UpgradeFailed(self._stored.failure)
                migrated = installed.release
            return upgrade_results(before, installed, migrated, self.unit.is_leader()), None

        self._refresh = True
        self._run(event, work)

    # -- status --------------------------------------------------------------
    def _on_collect_status(self, event: ops.CollectStatusEvent) -> None:
        installed = self.packages.installed()
        if installed is not None:
            self.unit.set_workload_version(installed.version)
        for problem in (self._stored.problem, self._stored.failure):
            if problem:
                event.add_status(ops.BlockedStatus(unit_status.short(problem)))
        try:
            creds = self._credentials()
        except credentials.WaitingForDatabase as exc:
            event.add_status(ops.WaitingStatus(unit_status.short(scrub(str(exc)))))
            return
        except NovaDbError as exc:
            event.add_status(ops.BlockedStatus(unit_status.short(scrub(str(exc)))))
            return
        level, message = self._database_status(creds.settings, installed)
        status = unit_status.make(level, f"{message}; credentials: {creds.source}")
        event.add_status(status)

    def _database_status(self, settings: Settings, installed: Installed | None) -> tuple[str, str]:
        """The schema's state against the installed release, cached between quiet hooks.

        Hooks that may change it (update-status, config, relations, secrets,
        the schema actions) look again, with one bounded connect first, so a
        dead server costs seconds, not a minute of retries.
        """
        cached = self._stored.db_status
        if not self._refresh and cached is not None and time.time() - cached[2] < STATUS_TTL:
            return str(cached[0]), str(cached[1])
        release = installed.release if installed is not None else None
        try:
            unreachable = probe(settings.url("api"), PROBE_TIMEOUT)
            if unreachable is not None:
                level, message = "blocked", unreachable
            else:
                level, message = unit_status.schema(
                    version(settings), release, leader=self.unit.is_leader(), unit=self.app.name
                )
        except NovaDbError as exc:
            level, message = "blocked", str(exc)
        except DBAPIError as exc:
            # The server answered the probe but failed the schema inspection (a
            # privilege, a lost connection): one line, never the SQL, never error.
            level, message = "blocked", f"cannot read the schema: {dberrors.message(exc)}"
        except Exception as exc:  # noqa: BLE001 - status must never put the unit in error
            logger.error("status check failed:\n%s", scrub(traceback.format_exc()))
            level, message = "blocked", f"cannot read the schema: {type(exc).__name__}: {exc}"
        message = scrub(message)
        self._stored.db_status = [level, message, time.time()]
        return level, message


def _backup_path(value: str) -> Path:
    """A backup file named in a param: relative paths are under BACKUP_DIR, not the charm dir."""
    path = Path(value)
    return path if path.is_absolute() else BACKUP_DIR / path


if __name__ == "__main__":  # pragma: no cover
    ops.main(NovaCloudControllerCharm)
