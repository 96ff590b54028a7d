#!/usr/bin/env python3
"""nova-cloud-controller: novadb's operations as Juju actions, on any unit.

Thin by design: each handler loads typed params, opens the databases from
nova.conf (or a Juju secret), calls the library, streams progress with
``event.log`` and sets flattened results.  A library error fails the action
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
from typing import Any

import ops
from novadb import render
from novadb.archive import ArchiveOptions, ArchiveResult, archive
from novadb.config import Settings, load_settings
from novadb.errors import ConfigError, NovaDbError
from novadb.null_uuid import null_instance_uuid_scan
from novadb.online.runner import online_migrate
from novadb.purge import PurgeOptions, PurgeResult, purge
from novadb.releases import (
    RELEASES,
    release_for_nova_version,
    release_index,
    release_label,
    schema_position,
)
from novadb.sync import sync, version

from charm_params import (
    ArchiveDataParams,
    ArchiveParams,
    CharmConfig,
    NullUuidParams,
    OnlineMigrateParams,
    PurgeDataParams,
    PurgeParams,
    SyncParams,
    ThrottledLog,
    VersionParams,
    flatten,
    result_key,
)

logger = logging.getLogger(__name__)

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
    def _run(self, event: ops.ActionEvent, work: Callable[[ThrottledLog], dict[str, Any]]) -> None:
        log = ThrottledLog(lambda message: event.log(scrub(message)))
        try:
            results = work(log)
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
        failures = results.pop("_failures", None)
        event.set_results({k: scrub(str(v)) for k, v in results.items()})
        if failures:
            event.fail(scrub("; ".join(failures)))

    def _on_sync(self, event: ops.ActionEvent) -> None:
        params = event.load_params(SyncParams, errors="fail")

        def work(log: ThrottledLog) -> dict[str, Any]:
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
            out: dict[str, Any] = {"release": release or "head"}
            for d in result.databases:
                key = result_key("databases", d.name)
                out[f"{key}.before"] = d.before or "none"
                out[f"{key}.after"] = d.after or "none"
                out[f"{key}.applied"] = len(d.applied)
                if d.skipped:
                    out[f"{key}.skipped"] = d.skipped
            out["applied"] = sum(len(d.applied) for d in result.databases)
            return out

        self._run(event, work)

    def _on_version(self, event: ops.ActionEvent) -> None:
        params = event.load_params(VersionParams, errors="fail")

        def work(_log: ThrottledLog) -> dict[str, Any]:
            result = version(self._settings(), params.database, local_cell=params.local_cell)
            out: dict[str, Any] = {}
            for d in result.databases:
                key = result_key("databases", d.name)
                out[f"{key}.current"] = d.current or "none"
                out[f"{key}.head"] = d.head
                out[f"{key}.pending"] = d.pending
                out[f"{key}.release"] = d.release or "unknown"
            out["pending"] = sum(d.pending for d in result.databases)
            return out

        self._run(event, work)

    def _on_online_migrate(self, event: ops.ActionEvent) -> None:
        params = event.load_params(OnlineMigrateParams, errors="fail")

        def work(log: ThrottledLog) -> dict[str, Any]:
            result = online_migrate(
                self._settings(),
                max_count=params.max_count,
                batch_size=params.batch_size,
                database=params.database,
                all_cells=params.all_cells,
                progress=log,
            )
            out: dict[str, Any] = {
                "done": result.done,
                "complete": result.complete,
                "more-to-do": result.exit_code == 1,
                "output": render.online_text(result),
            }
            for m in result.migrations:
                key = result_key("migrations", m.name.replace(".", "-"))
                out[f"{key}.found"] = m.found
                out[f"{key}.done"] = m.done
                out[f"{key}.unmigratable"] = len(m.unmigratable)
            if result.exit_code == 2:
                out["_failures"] = [f"{m.name}: {m.error}" for m in result.migrations if m.error]
            return out

        self._run(event, work)

    def _on_archive(self, event: ops.ActionEvent) -> None:
        params = event.load_params(ArchiveParams, errors="fail")

        def work(log: ThrottledLog) -> dict[str, Any]:
            # The action's params are the library's options, name for name.
            options = ArchiveOptions.from_text(**dataclasses.asdict(params))
            return _archive_results(archive(self._settings(), options, progress=log))

        self._run(event, work)

    def _on_archive_data(self, event: ops.ActionEvent) -> None:
        params = event.load_params(ArchiveDataParams, errors="fail")

        def work(log: ThrottledLog) -> dict[str, Any]:
            options = ArchiveOptions(
                batch_size=params.batch_size, until_complete=True, max_runtime=params.max_runtime
            )
            result = archive(self._settings(), options, progress=log)
            out = _archive_results(result)
            text = render.archive_text(result)
            if not result.total and not result.complete:
                # Stopped before moving anything: COU must not read "Nothing
                # was archived" as "nothing is left".
                text = (
                    f"Archive stopped ({result.stopped or 'failed'}) before moving rows; run again"
                )
            elif result.total and result.complete:
                # COU repeats the action until it reads this sentence; say it
                # now rather than make it call again for nothing.
                text += "\nArchive complete: Nothing was archived in the final pass."
            out["archive-deleted-rows"] = text
            return out

        self._run(event, work)

    def _on_purge(self, event: ops.ActionEvent) -> None:
        params = event.load_params(PurgeParams, errors="fail")

        def work(log: ThrottledLog) -> dict[str, Any]:
            options = PurgeOptions.from_text(
                before=params.before,
                purge_all=params.all,
                all_cells=params.all_cells,
                batch_size=params.batch_size,
                dry_run=params.dry_run,
            )
            return _purge_results(purge(self._settings(), options, progress=log))

        self._run(event, work)

    def _on_purge_data(self, event: ops.ActionEvent) -> None:
        params = event.load_params(PurgeDataParams, errors="fail")

        def work(log: ThrottledLog) -> dict[str, Any]:
            options = PurgeOptions.from_text(before=params.before, purge_all=params.before is None)
            result = purge(self._settings(), options, progress=log)
            out = _purge_results(result)
            out["output"] = render.purge_text(result)
            return out

        self._run(event, work)

    def _on_null_uuid(self, event: ops.ActionEvent) -> None:
        params = event.load_params(NullUuidParams, errors="fail")

        def work(log: ThrottledLog) -> dict[str, Any]:
            result = null_instance_uuid_scan(self._settings(), delete=params.delete, progress=log)
            out: dict[str, Any] = {"total": result.total, "deleted": result.deleted}
            for d in result.databases:
                out.update(flatten(d.rows, result_key("rows", d.name)))
            return out

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


def _archive_results(result: ArchiveResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "total": result.total,
        "batches": result.batches,
        "complete": result.complete,
        "elapsed": result.elapsed,
        "dry-run": result.dry_run,
    }
    if result.stopped:
        out["stopped"] = result.stopped
    out.update(flatten(result.rows))
    out.update(flatten(result.held_back, "held-back"))
    if result.purge is not None:
        out.update(flatten(result.purge.rows, "purged"))
    if result.failures:
        out["_failures"] = result.failures
    return out


def _purge_results(result: PurgeResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "total": result.total,
        "elapsed": result.elapsed,
        "dry-run": result.dry_run,
    }
    if result.stopped:
        out["stopped"] = result.stopped
    out.update(flatten(result.rows))
    return out


if __name__ == "__main__":  # pragma: no cover
    ops.main(NovaCloudControllerCharm)
