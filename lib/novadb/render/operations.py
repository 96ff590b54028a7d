"""Turn result objects into tables (people) or JSON (machines).

Renderers are separate from operations: the library returns dataclasses, the
CLI picks a renderer, the charm flattens the same objects into action results.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from novadb import exit_codes
from novadb.archive.archive import ArchiveResult
from novadb.archive.purge import PurgeResult
from novadb.check.check import CheckResult
from novadb.findings import Finding
from novadb.online.runner import OnlineResult
from novadb.progress import Event
from novadb.schema.null_uuid import NullUuidResult
from novadb.schema.sync import SyncResult, VersionResult


def to_json(result: Any) -> str:
    """The result object as JSON (dataclasses become objects)."""
    return json.dumps(dataclasses.asdict(result), indent=2, sort_keys=False, default=str)


def sync_table(result: SyncResult) -> Table:
    """One row per database: before, after, revisions applied."""
    table = Table(title="sync")
    for column in ("Database", "URL", "Before", "After", "Applied"):
        table.add_column(column)
    for d in result.databases:
        applied = d.skipped and f"skipped: {d.skipped}" or (", ".join(d.applied) or "-")
        table.add_row(d.name, d.url, d.before or "-", d.after or "-", applied)
    return table


def version_table(result: VersionResult) -> Table:
    """One row per database: current, head, pending, newest release satisfied."""
    table = Table(title="version")
    for column in ("Database", "URL", "Current", "Head", "Pending", "Release"):
        table.add_column(column)
    for d in result.databases:
        table.add_row(d.name, d.url, d.current or "-", d.head, str(d.pending), d.release or "-")
    return table


def null_uuid_table(result: NullUuidResult) -> Table:
    """Rows with a NULL instance uuid, per database and table."""
    table = Table(title="rows deleted" if result.deleted else "rows with NULL instance uuid")
    for column in ("Database", "Table", "Rows"):
        table.add_column(column)
    for d in result.databases:
        for name, count in sorted(d.rows.items()):
            table.add_row(d.name, name, str(count))
    return table


def ascii_table(
    headers: tuple[str, ...], rows: list[tuple[str, ...]], *, centered: bool = False
) -> str:
    """A table in nova-manage's (PrettyTable) layout: left-aligned, or centered.

    Scripts and COU read this text, so it stays exactly nova-manage's shape
    rather than a rich table.
    """
    widths = [max(len(headers[i]), *(len(r[i]) for r in rows)) for i in range(len(headers))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    spec = "^" if centered else "<"

    def line(cells: tuple[str, ...]) -> str:
        return "|" + "|".join(f" {c:{spec}{w}} " for c, w in zip(cells, widths, strict=True)) + "|"

    return "\n".join([rule, line(headers), rule, *(line(r) for r in rows), rule])


def archive_text(result: ArchiveResult) -> str:
    """nova-manage's --verbose output: the per-table table, or "Nothing was archived."."""
    if not result.total:
        return "Nothing was archived."
    rows = [(table, str(n)) for table, n in sorted(result.rows.items())]
    return ascii_table(("Table", "Number of Rows Archived"), rows)


def archive_summary(result: ArchiveResult) -> str:
    """One line: how much moved, in how many batches, and whether anything is left."""
    verb = "would move" if result.dry_run else "archived"
    state = (
        "nothing left to archive"
        if result.complete
        else f"stopped ({result.stopped})"
        if result.stopped
        else "more left; run again"
    )
    text = (
        f"{verb} {result.total} rows in {result.batches} batches, {result.elapsed:.1f} s; {state}"
    )
    if result.retries or result.halvings or result.reconnects:
        text += (
            f" (adapted: {result.retries} retries, {result.halvings} halvings, "
            f"{result.reconnects} reconnects)"
        )
    if result.held_back:
        held = ", ".join(f"{t} {n}" for t, n in sorted(result.held_back.items()))
        text += f"\nheld back (still referenced by tables archive does not move): {held}"
    return text


def online_batch_line(event: Event) -> str | None:
    """nova-manage's line for a migration call that found rows, or None for other events.

    ``N rows matched query NAME, M migrated``, word for word, so scripts that
    read nova-manage's output read ours.
    """
    if event.operation != "online-migrate" or event.kind != "batch":
        return None
    data = event.data
    return f"{data['found']} rows matched query {data['migration']}, {data['done']} migrated"


def online_text(result: OnlineResult) -> str:
    """nova-manage's table (``Migration | Total Needed | Completed``), then what could not move."""
    rows = [
        (m.name, str(m.found), str(m.done))
        for m in sorted(result.migrations, key=lambda m: m.name)
    ]
    lines = (
        [ascii_table(("Migration", "Total Needed", "Completed"), rows, centered=True)]
        if rows
        else []
    )
    for m in result.migrations:
        for u in m.unmigratable:
            lines.append(f"{m.name}: {u.table} {u.id} not migrated: {u.reason}")
        if m.error:
            lines.append(f"{m.name}: failed: {m.error}")
    return "\n".join(lines)


def purge_text(result: PurgeResult) -> str:
    """nova-manage's --verbose purge lines, one per shadow table with rows."""
    lines = list(result.messages)
    if not result.total:
        lines.append("Purging stale soft-deleted rows and no data was deleted")
    return "\n".join(lines)


_SEVERITY_ORDER = {"blocker": 0, "warning": 1, "info": 2}


def worst_first(findings: Iterable[Finding]) -> list[Finding]:
    """Blockers, then warnings, then info; database order within each (a stable sort).

    The CLI prints findings in this order and the charm numbers them in it, so
    a list cut short keeps what matters most.
    """
    return sorted(findings, key=lambda f: _SEVERITY_ORDER[f.severity])


_SEVERITY_STYLE = {"blocker": "bold red", "warning": "yellow", "info": "dim"}


def check_table(result: CheckResult) -> Group:
    """Findings, worst first: what and where, why in a sentence, and the command that fixes it.

    A block per finding rather than a table: summaries and fixes are
    sentences and commands, which a table column would wrap unreadably.
    """
    parts: list[Text | Padding] = []
    for f in worst_first(result.findings):
        head = Text(f"{f.severity.upper():8}", style=_SEVERITY_STYLE[f.severity])
        subject = f" ({f.subject})" if f.subject else ""
        head.append(f" {f.database}: {f.code}{subject}, {f.count}")
        parts += [
            head,
            Padding(Text(f.summary), (0, 0, 0, 9)),
            Padding(Text(f"fix: {f.fix}"), (0, 0, 0, 9)),
        ]
    verdict = {
        exit_codes.CHECK_CLEAN: "nothing will bite",
        exit_codes.CHECK_WARNINGS: "warnings to clean up",
        exit_codes.CHECK_BLOCKERS: "blockers: fix them first",
    }
    parts.append(
        Text(
            f"{result.count('blocker')} blockers, {result.count('warning')} warnings, "
            f"{result.count('info')} info in {len(result.databases)} databases "
            f"({result.elapsed:.1f} s): {verdict[result.exit_code]}"
        )
    )
    return Group(*parts)
