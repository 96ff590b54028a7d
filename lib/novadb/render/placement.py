"""Tables and text for the Placement operations' results (CLI; the charm flattens the same)."""

from __future__ import annotations

import json

from rich.console import Group
from rich.padding import Padding
from rich.text import Text

from novadb.placement.aggregates import AggregatesResult
from novadb.placement.audit import AuditFinding, AuditResult
from novadb.placement.backup.database import RestoreResult
from novadb.placement.heal import HealResult, NotHealed
from novadb.placement.rebuild import RebuildResult
from novadb.render.operations import with_options
from novadb.render.records import Records

SHOWN = 20  # per list; the rest is counted, --json has everything


def audit_table(result: AuditResult, options: str = "") -> Group:
    """Findings grouped by kind: the fix once per kind, then one line per finding.

    Fix commands carry the operator's global ``options`` (``with_options``).
    """
    parts: list[Text | Padding] = []
    if not result.findings:
        parts.append(
            Text(
                f"Placement agrees with Nova: {result.compute_nodes} compute nodes, "
                f"{result.providers} providers, no orphan allocations."
            )
        )
        return Group(*parts)
    by_kind: dict[str, list[AuditFinding]] = {}
    for f in result.findings:
        by_kind.setdefault(f.kind, []).append(f)
    for kind, found in by_kind.items():
        fix = with_options(found[0].fix, options)
        parts.append(Text(f"{kind}: {len(found)}, fix: {fix}", style="bold"))
        for f in found[:SHOWN]:
            line = Text(f"{f.name or f.provider}: {f.detail}")
            parts.append(Padding(line, (0, 0, 0, 2), expand=False))
        if len(found) > SHOWN:
            parts.append(
                Padding(
                    Text(f"... and {len(found) - SHOWN} more (--json)"), (0, 0, 0, 2), expand=False
                )
            )
    summary = ", ".join(f"{len(v)} {k}" for k, v in by_kind.items())
    if result.deleted_consumers:
        summary += (
            f"; deleted {result.deleted_allocations} allocations of "
            f"{result.deleted_consumers} orphan consumers"
        )
    if result.changed_consumers:
        summary += f"; {len(result.changed_consumers)} consumers changed meanwhile, left alone"
    parts.append(Text(summary))
    return Group(*parts)


def heal_table(result: HealResult) -> Group:
    """nova-manage's per-instance lines for what changed, then a summary table."""
    lines: list[str] = []
    for h in result.healed[:SHOWN]:
        verb = "Create" if h.action == "create" else "Update"
        if result.dry_run:
            payload = json.dumps(
                {
                    "allocations": {h.provider: {"resources": h.resources}},
                    "project_id": h.project_id,
                    "user_id": h.user_id,
                },
                sort_keys=True,
            )
            lines.append(f"[dry-run] {verb} allocations for instance {h.instance}: {payload}")
        else:
            lines.append(f"Successfully {verb.lower()}d allocations for instance {h.instance}.")
    if len(result.healed) > SHOWN:
        lines.append(f"... and {len(result.healed) - SHOWN} more")
    lines += _grouped(result.failed)
    for item in result.skipped[:SHOWN]:
        lines.append(item.reason)
    if len(result.skipped) > SHOWN:
        lines.append(f"... and {len(result.skipped) - SHOWN} more skipped")
    columns = ("Healed", "Up to date", "Skipped", "Failed", "Cells", "Seconds")
    row = (
        str(result.processed),
        str(result.up_to_date),
        str(len(result.skipped)),
        str(len(result.failed)),
        str(result.cells),
        f"{result.elapsed:.1f}",
    )
    title = "heal-allocations" + (" (dry run)" if result.dry_run else "")
    table = Records(title, columns, [row], right=frozenset(columns))
    tail = "Max count reached. " if result.max_count_reached else ""
    if result.stopped:
        tail = "Stopped (Ctrl-C) after the batch in progress. "
    return Group(
        *(Text(line) for line in lines),
        table,
        Text(f"{tail}Processed {result.processed} instances."),
    )


def _grouped(failed: list[NotHealed]) -> list[str]:
    """Failures with the same cause (say, one node without a provider) as one line each."""
    causes: dict[str, list[str]] = {}
    for f in failed:
        cause = f.reason.removeprefix(f"Instance {f.instance}: ")
        causes.setdefault(cause, []).append(f.instance)
    lines = []
    for cause, instances in list(causes.items())[:SHOWN]:
        if len(instances) == 1:
            lines.append(f"Instance {instances[0]}: {cause}")
        else:
            lines.append(f"{len(instances)} instances (e.g. {instances[0]}): {cause}")
    if len(causes) > SHOWN:
        lines.append(f"... and {len(causes) - SHOWN} more causes (--json lists every instance)")
    return lines


def aggregates_table(result: AggregatesResult) -> Group:
    """Memberships added, then nova-manage's messages for hosts it could not resolve."""
    table = Records(
        "sync-aggregates" + (" (dry run)" if result.dry_run else ""),
        ("Aggregate", "Host", "Provider"),
        [tuple(added) for added in result.added[:SHOWN]],
    )
    parts: list[Records | Text] = [table] if result.added else []
    verb = "would add" if result.dry_run else "added"
    parts.append(
        Text(
            f"{result.aggregates} aggregates: {verb} {len(result.added)} host memberships, "
            f"{result.already} already present"
        )
    )
    if result.unmapped_hosts:
        parts.append(
            Text(
                "Some hosts are not mapped to a cell. Run `nova-manage cell_v2 discover_hosts` "
                f"and then retry. Missing: {','.join(result.unmapped_hosts)}"
            )
        )
    if result.missing_nodes:
        parts.append(
            Text(
                "Unable to find matching compute_nodes record entries in the database for the "
                "following hosts; does the nova-compute service on each host need to be "
                f"restarted? Missing: {','.join(result.missing_nodes)}"
            )
        )
    if result.missing_providers:
        # nova-manage 34's line (it stops at the first such host), then what to do.
        for _host, node in result.missing_providers:
            parts.append(Text(f"Failed to get aggregates for resource provider with UUID {node}"))
        pairs = ",".join(f"{h}={u}" for h, u in result.missing_providers)
        parts.append(
            Text(
                f"Compute nodes without a resource provider in Placement (host=uuid): {pairs}; "
                "their hosts were left out, every other membership was added. Restart "
                "nova-compute on those hosts or run `novadb placement-audit`, then retry."
            )
        )
    return Group(*parts)


def rebuild_table(result: RebuildResult) -> Group:
    """One row per step: number, name, what it did (or would do)."""
    table = Records(
        "rebuild-placement" + (" (dry run)" if result.dry_run else ""),
        ("Step", "Name", "Result"),
        [(s.position, s.name, s.summary) for s in result.steps],
    )
    parts: list[Records | Text | Group] = [table]
    if result.audit is not None and result.audit.findings:
        parts.append(audit_table(result.audit))
    if result.heal is not None and result.heal.failed:
        parts.append(Text("\n".join(f.reason for f in result.heal.failed[:SHOWN])))
    parts.append(Text(f"{result.elapsed:.1f} s"))
    return Group(*parts)


def restore_text(result: RestoreResult) -> Text:
    """One line: what came back from which file, at which revision."""
    rows = sum(result.rows.values())
    text = (
        f"restored {rows} rows in {len(result.rows)} tables from {result.path} "
        f"(revision {result.revision}) in {result.elapsed:.1f} s; every table verified"
    )
    if result.adjusted:
        rounded = ", ".join(f"{t} {n}" for t, n in sorted(result.adjusted.items()))
        text += f"; values rounded to what this database stores: {rounded}"
    return Text(text)
