"""Library results as Juju action results: flat, kebab-case keys, and the messages that fail.

Juju takes an action's results as a flat mapping of dotted keys (lowercase,
digits, ``-``), shows them as nested YAML and drops empty values; operators
and COU read them, so each key is chosen once, here, and the handlers in
charm.py only pick the function for their operation.  Everything here is a
pure function of a library result: no ops, no I/O, so a key can be tested
without running the charm.

Values may be any object; the charm turns each into text (and masks any
password) when it sets the results.  The ``*_failure`` functions word the
message an action fails with *after* its results are set; whether an
outcome fails the action at all is the handler's exit-code policy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from novadb import exit_codes
from novadb.archive.archive import ArchiveResult
from novadb.archive.purge import PurgeResult
from novadb.check.check import CheckResult
from novadb.online.runner import OnlineResult
from novadb.placement.aggregates import AggregatesResult
from novadb.placement.audit import AuditResult
from novadb.placement.backup.database import RestoreResult
from novadb.placement.heal import HealResult
from novadb.placement.kinds import AuditKind
from novadb.placement.rebuild import RebuildResult
from novadb.render import operations as render
from novadb.render.placement import SHOWN
from novadb.schema.null_uuid import NullUuidResult
from novadb.schema.releases import release_label
from novadb.schema.sync import SyncResult, VersionResult

from installed import Installed

Results = dict[str, Any]

# Results list at most this many items of each list (the CLI's table too);
# the counts beside them are complete.
LISTED = SHOWN

_KEY = re.compile(r"[^a-z0-9.-]+")


# -- the pieces ------------------------------------------------------------------------------


def result_key(*parts: str) -> str:
    """A Juju result key: lowercase, ``_`` → ``-``, parts joined by dots.

    Juju refuses keys with other characters, and a dot makes a level of the
    YAML it shows: ``cell1.instances`` becomes ``rows: {cell1: {instances: ...}}``.
    """
    key = ".".join(_KEY.sub("-", p.lower().replace("_", "-")).strip("-.") for p in parts)
    return key.strip(".")


def flatten(rows: dict[str, int], prefix: str = "rows") -> dict[str, str]:
    """``{"cell1.instances": 3}`` → ``{"rows.cell1.instances": "3"}``, sorted by table."""
    return {result_key(prefix, *table.split(".")): str(n) for table, n in sorted(rows.items())}


def index(i: int, limit: int = LISTED) -> str:
    """``i`` zero-padded to the width of ``limit - 1``: ``00`` … ``19``.

    Juju shows result keys sorted as text, so ``findings.10`` would come
    before ``findings.2``; padded, they read in the order the library gave.
    """
    return f"{i:0{len(str(max(limit - 1, 0)))}d}"


def as_text(value: object) -> str:
    """A result value as Juju shows it: booleans in YAML's ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def numbered(prefix: str, items: Sequence[Mapping[str, object]], limit: int) -> dict[str, str]:
    """The first ``limit`` items as ``prefix.00.field``, ``prefix.01.field``, ...

    Juju has no lists, only keys; numbering keeps the order the library gave.
    Fields that are None or empty are left out (Juju shows no empty values).
    """
    return {
        result_key(prefix, index(i, limit), name): as_text(value)
        for i, item in enumerate(items[:limit])
        for name, value in item.items()
        if value is not None and value != ""
    }


_COMMAND = re.compile(r"\bnovadb ([a-z][a-z-]*)((?: --[a-z][a-z-]*(?: (?!--)[^\s;,()`]+)?)*)")
_OPTION = re.compile(r"--([a-z][a-z-]*)(?: ((?!--)[^\s;,()`]+))?")
# The CLI-only operation; every other one is an action of the same name.
_CLI_ONLY = frozenset({"demo"})
UNIT = "nova-cloud-controller/leader"


def as_action(text: str, unit: str = UNIT) -> str:
    """A fix that names a ``novadb`` command, reworded as the ``juju run`` of its action.

    ``novadb online-migrate --database main --all-cells`` becomes ``juju run
    <unit> online-migrate database=main all-cells=true``: on a unit the novadb
    command is not on PATH, and the action takes the same words as params.
    Other text (SQL, nova-manage, prose) is left as it is.
    """

    def reword(match: re.Match[str]) -> str:
        operation = match.group(1)
        if operation in _CLI_ONLY:
            return match.group(0)
        params = [f"{name}={value or 'true'}" for name, value in _OPTION.findall(match.group(2))]
        return " ".join(["juju run", unit, operation, *params])

    return _COMMAND.sub(reword, text)


# -- schema ----------------------------------------------------------------------------------


def sync_results(result: SyncResult, release: str | None) -> Results:
    """What sync moved each database from and to; ``release`` is the target it was given."""
    out: Results = {"release": release or "head"}
    for d in result.databases:
        key = result_key("databases", d.name)
        out[f"{key}.before"] = d.before or "none"
        out[f"{key}.after"] = d.after or "none"
        out[f"{key}.applied"] = len(d.applied)
        if d.skipped:
            out[f"{key}.skipped"] = d.skipped
    out["applied"] = sum(len(d.applied) for d in result.databases)
    return out


def version_results(result: VersionResult) -> Results:
    """Each database's revision, head and release ("none"/"unknown": Juju drops empty values)."""
    out: Results = {}
    for d in result.databases:
        key = result_key("databases", d.name)
        out[f"{key}.current"] = d.current or "none"
        out[f"{key}.head"] = d.head
        out[f"{key}.pending"] = d.pending
        out[f"{key}.release"] = d.release or "unknown"
    out["pending"] = sum(d.pending for d in result.databases)
    return out


def online_results(result: OnlineResult) -> Results:
    """Counts per migration, and nova-manage's table as ``output`` for whoever parses it."""
    out: Results = {
        "done": result.done,
        "complete": result.complete,
        "more-to-do": result.exit_code == exit_codes.ONLINE_MORE,
        "output": render.online_text(result),
    }
    for m in result.migrations:
        key = result_key("migrations", m.name.replace(".", "-"))
        out[f"{key}.found"] = m.found
        out[f"{key}.done"] = m.done
        out[f"{key}.unmigratable"] = len(m.unmigratable)
    return out


def online_failure(result: OnlineResult) -> str:
    """Each failed migration and its error, for the action's failure message."""
    return "; ".join(f"{m.name}: {m.error}" for m in result.migrations if m.error)


# -- archive, purge, null uuids --------------------------------------------------------------


def archive_results(result: ArchiveResult) -> Results:
    """Rows moved per table, rows held back, and what purge removed when asked to."""
    out: Results = {
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
    return out


def archive_failure(result: ArchiveResult) -> str:
    """The tables that failed, each with its one-line reason."""
    return "; ".join(result.failures)


def archive_data_results(result: ArchiveResult) -> Results:
    """The archive action's results plus ``archive-deleted-rows``, the text COU loops on.

    COU repeats archive-data until that text contains "Nothing was archived",
    so it must never say so when rows may be left, and should say so as soon
    as nothing is.
    """
    out = archive_results(result)
    text = render.archive_text(result)
    if not result.total and not result.complete:
        # Stopped before moving anything: COU must not read "Nothing was
        # archived" as "nothing is left".
        text = f"Archive stopped ({result.stopped or 'failed'}) before moving rows; run again"
    elif result.total and result.complete:
        # COU repeats the action until it reads this sentence; say it now
        # rather than make it call again for nothing.
        text += "\nArchive complete: Nothing was archived in the final pass."
    out["archive-deleted-rows"] = text
    return out


def purge_results(result: PurgeResult) -> Results:
    """Rows deleted per shadow table."""
    out: Results = {
        "total": result.total,
        "elapsed": result.elapsed,
        "dry-run": result.dry_run,
    }
    if result.stopped:
        out["stopped"] = result.stopped
    out.update(flatten(result.rows))
    return out


def purge_data_results(result: PurgeResult) -> Results:
    """The purge action's results plus ``output`` (nova-manage's lines), as COU reads it."""
    out = purge_results(result)
    out["output"] = render.purge_text(result)
    return out


def null_uuid_results(result: NullUuidResult) -> Results:
    """Rows with a NULL instance uuid per database and table."""
    out: Results = {"total": result.total, "deleted": result.deleted}
    for d in result.databases:
        out.update(flatten(d.rows, result_key("rows", d.name)))
    return out


# -- check -----------------------------------------------------------------------------------


def check_results(result: CheckResult) -> Results:
    """The verdict, counts per severity, and the first findings, worst first.

    Worst first (blockers, warnings, info; database order within each) as
    the CLI prints them, so a list cut at LISTED keeps what matters most.
    ``exit-code`` is the CLI's: 2 blockers, 1 warnings, 0 nothing to do.
    """
    out: Results = {
        "exit-code": result.exit_code,
        "blockers": result.count("blocker"),
        "warnings": result.count("warning"),
        "info": result.count("info"),
        "elapsed": round(result.elapsed, 3),
    }
    findings = [
        {
            "severity": f.severity,
            "database": f.database,
            "code": f.code,
            "subject": f.subject,
            "count": f.count,
            "summary": f.summary,
            "fix": as_action(f.fix) if f.fix else f.fix,
        }
        for f in render.worst_first(result.findings)
    ]
    out.update(numbered("findings", findings, LISTED))
    return out


# -- Placement -------------------------------------------------------------------------------


def audit_results(result: AuditResult) -> Results:
    """Counts per kind (every kind, zeros too, so scripts need no default) and the findings."""
    out: Results = {
        "exit-code": result.exit_code,
        "total": len(result.findings),
        "remaining": len(result.remaining),
        "providers": result.providers,
        "compute-nodes": result.compute_nodes,
        "deleted.consumers": result.deleted_consumers,
        "deleted.allocations": result.deleted_allocations,
        "elapsed": round(result.elapsed, 3),
    }
    out.update({result_key("found", kind.value): result.count(kind) for kind in AuditKind})
    if result.changed_consumers:
        out["changed-consumers"] = len(result.changed_consumers)
    findings = [
        {
            "kind": f.kind,
            "provider": f.provider,
            "name": f.name,
            "consumer": f.consumer,
            "detail": f.detail,
            "fix": as_action(f.fix) if f.fix else f.fix,
        }
        for f in result.findings
    ]
    out.update(numbered("findings", findings, LISTED))
    return out


def heal_results(result: HealResult) -> Results:
    """Counts, then the allocations written, the instances skipped and those that failed."""
    out: Results = {
        "exit-code": result.exit_code,
        "healed": result.processed,
        "up-to-date": result.up_to_date,
        "skipped": len(result.skipped),
        "failed": len(result.failed),
        "dry-run": result.dry_run,
        "max-count-reached": result.max_count_reached,
        "cells": result.cells,
        "elapsed": round(result.elapsed, 3),
    }
    healed = [
        {
            "instance": h.instance,
            "action": h.action,
            "provider": h.provider,
            "resources": ",".join(f"{rc}={n}" for rc, n in sorted(h.resources.items())),
        }
        for h in result.healed
    ]
    out.update(numbered("allocations", healed, LISTED))
    skips = [{"instance": s.instance, "reason": s.reason} for s in result.skipped]
    out.update(numbered("skips", skips, LISTED))
    failures = [
        {"instance": f.instance, "code": f.code, "reason": f.reason} for f in result.failed
    ]
    out.update(numbered("failures", failures, LISTED))
    return out


def heal_failure(result: HealResult) -> str:
    """How many instances were not healed and the first three reasons (the rest: results)."""
    reasons = [f.reason for f in result.failed[:3]]
    if len(result.failed) > 3:
        reasons.append(f"and {len(result.failed) - 3} more (results failures.N)")
    head = f"{len(result.failed)} instance(s) not healed (exit code {result.exit_code})"
    return "; ".join([head, *reasons])


def aggregates_results(result: AggregatesResult) -> Results:
    """Memberships added, and the hosts that could not be resolved, comma-separated."""
    out: Results = {
        "exit-code": result.exit_code,
        "dry-run": result.dry_run,
        "aggregates": result.aggregates,
        "added": len(result.added),
        "already": result.already,
        "elapsed": round(result.elapsed, 3),
    }
    added = [{"aggregate": a, "host": h, "provider": p} for a, h, p in result.added]
    out.update(numbered("memberships", added, LISTED))
    if result.unmapped_hosts:
        out["unmapped-hosts"] = ",".join(result.unmapped_hosts)
    if result.missing_nodes:
        out["missing-nodes"] = ",".join(result.missing_nodes)
    if result.missing_providers:
        out["missing-providers"] = _pairs(result)
    return out


def aggregates_failure(result: AggregatesResult) -> str:
    """Each class of unresolved host with what to do about it (nova-manage's 4, 5, 2)."""
    failures: list[str] = []
    if result.unmapped_hosts:
        failures.append(
            "hosts not mapped to a cell (run nova-manage cell_v2 discover_hosts, then retry): "
            + ",".join(result.unmapped_hosts)
        )
    if result.missing_nodes:
        failures.append(
            "hosts with no compute node record (does nova-compute on each need a restart?): "
            + ",".join(result.missing_nodes)
        )
    if result.missing_providers:
        failures.append(
            f"compute nodes with no resource provider (run placement-audit): {_pairs(result)}"
        )
    return "; ".join(failures)


def _pairs(result: AggregatesResult) -> str:
    return ",".join(f"{host}={node}" for host, node in result.missing_providers)


def rebuild_results(result: RebuildResult) -> Results:
    """Each step's summary, the backup's identity, and what heal, aggregates and audit found."""
    out: Results = {
        "exit-code": result.exit_code,
        "dry-run": result.dry_run,
        "providers": result.providers,
        "inventories": result.inventories,
        "elapsed": round(result.elapsed, 3),
    }
    for step in result.steps:
        out[f"steps.{step.number}.name"] = step.name
        out[f"steps.{step.number}.summary"] = step.summary
    out.update({f"reasons.{index(i)}": reason for i, reason in enumerate(result.reasons)})
    if result.backup is not None:
        out["backup.path"] = str(result.backup.path)
        out["backup.digest"] = result.backup.digest
        out["backup.bytes"] = result.backup.bytes
        out["backup.rows"] = sum(result.backup.rows.values())
    if result.heal is not None:
        out["heal.healed"] = result.heal.processed
        out["heal.skipped"] = len(result.heal.skipped)
        out["heal.failed"] = len(result.heal.failed)
    if result.aggregates is not None:
        out["aggregates.added"] = len(result.aggregates.added)
        out["aggregates.exit-code"] = result.aggregates.exit_code
    if result.audit is not None:
        out["audit.findings"] = len(result.audit.findings)
        for kind in AuditKind:
            if result.audit.count(kind):
                out[result_key("audit", "found", kind.value)] = result.audit.count(kind)
    return out


def rebuild_failure(result: RebuildResult) -> str:
    """What went wrong after the rebuild, and where the backup is (to restore it)."""
    problems: list[str] = []
    if result.heal is not None and result.heal.failed:
        first = result.heal.failed[0].reason
        problems.append(f"{len(result.heal.failed)} instance(s) not healed, e.g. {first}")
    if result.aggregates is not None and result.aggregates.exit_code:
        problems.append(
            f"sync-aggregates left hosts out (exit code {result.aggregates.exit_code}): "
            + aggregates_failure(result.aggregates)
        )
    if result.audit is not None and result.audit.findings:
        problems.append(
            f"the audit still finds {len(result.audit.findings)} problem(s); "
            "run placement-audit for the details"
        )
    backup = f" (backup: {result.backup.path})" if result.backup is not None else ""
    return f"rebuilt, but {'; '.join(problems)}{backup}"


def restore_results(result: RestoreResult) -> Results:
    """Rows restored per table, and the rows the restore had to adjust."""
    out: Results = {
        "exit-code": result.exit_code,
        "path": str(result.path),
        "revision": result.revision,
        "total": sum(result.rows.values()),
        "elapsed": round(result.elapsed, 3),
    }
    out.update(flatten(result.rows))
    out.update(flatten(result.adjusted, "adjusted"))
    return out


# -- the charm's own upgrade -------------------------------------------------------------------


def upgrade_results(
    before: Installed | None, after: Installed, migrated: int | None, leader: bool
) -> Results:
    """What openstack-upgrade did: the package before and after, and the databases' release."""
    out: Results = {
        "version.before": before.version if before is not None else "none",
        "version.after": after.version,
        "release": release_label(after.release) if after.release is not None else "unknown",
        "leader": leader,
    }
    if migrated is not None:
        out["databases"] = f"migrated to {release_label(migrated)}"
    else:
        out["databases"] = "left to the leader"
    return out
