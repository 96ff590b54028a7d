"""The database half of an OpenStack upgrade: the release's schema, then online migrations.

The classic nova-cloud-controller runs ``db sync`` and
``online_data_migrations`` when its release moves up; this does the same with
novadb's operations, on the leader only:

1. refuse when any database's schema is already *ahead* of the release (the
   code on the unit would be older than its schema; never migrate down);
2. ``sync`` every database to the release's heads, reporting each database's
   progress (``syncing cell1 (3/10)``);
3. ``online-migrate`` every cell until complete.

A failure is one line that names the step, the error and the action that
resumes the upgrade once the cause is fixed.  No ops here: the charm passes a
status callback and a log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from novadb import exit_codes
from novadb.api.operations import online_migrate, sync, version
from novadb.api.options import OnlineMigrateOptions, SyncOptions
from novadb.config import Settings
from novadb.errors import NovaDbError
from novadb.progress import Event, Progress
from novadb.schema.releases import RELEASES, release_label, schema_position

# The action that resumes an upgrade whose database steps failed.
RESUME = "openstack-upgrade"


class UpgradeFailed(NovaDbError):
    """A database step of the upgrade failed; the message names it and the fix."""


@dataclass(frozen=True)
class Migrated:
    """What the database steps did."""

    release: int
    applied: int
    migrated: int


def migrate_databases(
    settings: Settings,
    release: int,
    *,
    status: Callable[[str], None],
    log: Progress,
    unit: str,
    only_if_behind: bool = False,
) -> Migrated:
    """Bring every database to ``release`` (an index into RELEASES); UpgradeFailed if not.

    ``only_if_behind``: do nothing when no schema is behind the release (the
    charm met databases that already match the code it runs).
    """
    label = release_label(release)
    resume = f"fix it, then run: juju run {unit} {RESUME}"
    status(f"checking the schema against {label}")
    try:
        positions = {
            d.name: schema_position(d.environment, d.current, release)
            for d in version(settings).databases
        }
    except NovaDbError as exc:
        raise UpgradeFailed(f"upgrade to {label}: cannot read the schema: {exc}") from exc
    ahead = [name for name, position in positions.items() if position == "ahead"]
    if only_if_behind and not ahead and "behind" not in positions.values():
        return Migrated(release, 0, 0)
    if ahead:
        raise UpgradeFailed(
            f"upgrade to {label} refused: the schema of {', '.join(ahead)} is ahead of it "
            "(never migrated down); set openstack-origin to the release the schema is at"
        )

    counter = _SyncStatus(status)

    def on_sync(event: Event) -> None:
        counter(event)
        log(event)

    try:
        options = SyncOptions(release=RELEASES[release][0])
        synced = sync(settings, options, progress=on_sync)
    except Exception as exc:  # noqa: BLE001 - one line, whatever the library raised
        raise UpgradeFailed(f"upgrade to {label} failed in sync: {_first(exc)}; {resume}") from exc

    status(f"running online migrations for {label}")
    try:
        online = online_migrate(settings, OnlineMigrateOptions(all_cells=True), progress=log)
    except Exception as exc:  # noqa: BLE001
        raise UpgradeFailed(
            f"upgrade to {label} failed in online-migrate: {_first(exc)}; {resume}"
        ) from exc
    if online.exit_code == exit_codes.ONLINE_FAILED or not online.complete:
        failed = [f"{m.name}: {m.error}" for m in online.migrations if m.error]
        what = "; ".join(failed) or "migrations left rows they could not migrate"
        raise UpgradeFailed(f"upgrade to {label} failed in online-migrate: {what}; {resume}")
    applied = sum(len(d.applied) for d in synced.databases)
    return Migrated(release, applied, online.done)


class _SyncStatus:
    """Turn sync's progress into ``syncing <database> (n/total)``."""

    def __init__(self, status: Callable[[str], None]) -> None:
        self._status = status
        self._database = ""
        self._total = 0
        self._done = 0

    def __call__(self, event: Event) -> None:
        if event.kind == "database":
            self._database = str(event.data.get("database", ""))
            self._total = int(str(event.data.get("pending", 0)))
            self._done = 0
        elif event.kind == "revision":
            self._done += 1
        else:
            return
        self._status(f"syncing {self._database} ({self._done}/{self._total})")


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
