"""The unit's status, worded from the schema's state against the installed release.

Pure functions of library results, so every wording is tested without a
model: the charm's collect-status only gathers the inputs.
"""

from __future__ import annotations

import ops
from novadb.schema.releases import release_label, schema_position
from novadb.schema.sync import VersionResult

# Juju shows a status message on one line of `juju status`; keep it readable.
LIMIT = 240

_LEVELS = {
    "active": ops.ActiveStatus,
    "blocked": ops.BlockedStatus,
    "waiting": ops.WaitingStatus,
    "maintenance": ops.MaintenanceStatus,
}


def short(message: str) -> str:
    """The first line of ``message``, cut to LIMIT characters with an ellipsis."""
    first = (message.strip().splitlines() or [""])[0]
    return first if len(first) <= LIMIT else first[: LIMIT - 1] + "…"


def make(level: str, message: str) -> ops.StatusBase:
    """An ops status of ``level`` with a short message."""
    return _LEVELS[level](short(message))


def schema(
    result: VersionResult, release: int | None, *, leader: bool, unit: str
) -> tuple[str, str]:
    """(level, message) for the schema against the installed release (None: no package).

    Behind the installed code: the leader is blocked (its upgrade steps did not
    run or failed; the action resumes them), another unit waits for the
    leader.  Ahead of it: blocked, since the code is older than its schema and
    novadb never migrates down.
    """
    pending = sum(d.pending for d in result.databases)
    plural = "s" if pending != 1 else ""
    summary = "schema at head" if not pending else f"{pending} schema revision{plural} pending"
    if release is None:
        return "active", summary
    label = release_label(release)
    positions = {schema_position(d.environment, d.current, release) for d in result.databases}
    if "ahead" in positions:
        return "blocked", (
            f"{summary}; ahead of installed {label}: the schema is newer than nova-common; "
            "set openstack-origin to the schema's release"
        )
    if "behind" in positions:
        if leader:
            return "blocked", (
                f"{summary}; behind installed {label}: run juju run {unit}/leader "
                "openstack-upgrade"
            )
        return "waiting", f"{summary}; behind installed {label}: waiting for the leader to migrate"
    return "active", f"{summary}; matches installed {label}"
