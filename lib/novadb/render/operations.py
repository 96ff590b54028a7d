"""Turn result objects into tables (people) or JSON (machines).

Renderers are separate from operations: the library returns dataclasses, the
CLI picks a renderer, the charm flattens the same objects into action results.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from typing import Any

from rich.console import Group
from rich.padding import Padding
from rich.text import Text

from novadb import exit_codes
from novadb.archive.archive import ArchiveResult
from novadb.archive.purge import PurgeResult
from novadb.check.check import CheckResult
from novadb.findings import Finding
from novadb.online.runner import OnlineResult
from novadb.progress import Event
from novadb.render.records import Records
from novadb.schema.null_uuid import NullUuidResult
from novadb.schema.sync import SyncResult, VersionResult

_COMMAND = re.compile(r"(^|`)novadb (?=[a-z])")


def with_options(text: str, options: str) -> str:
    """``text`` (a fix, an error's advice) with ``options`` after each ``novadb`` command.

    A command is ``novadb`` at the start of the text or after a backtick, so
    "another novadb archive is running" stays as it is.  ``options`` are the
    global options the operator gave (``--config-file ...``, masked URLs), so a
    fix line can be pasted back as it stands.
    """
    if not options:
        return text
    return _COMMAND.sub(lambda m: f"{m.group(1)}novadb {options} ", text)


def to_json(result: Any) -> str:
    """The result object as JSON (dataclasses become objects)."""
    return json.dumps(dataclasses.asdict(result), indent=2, sort_keys=False, default=str)


def sync_table(result: SyncResult) -> Records:
    """One row per database: before, after, revisions applied."""
    rows = []
    for d in result.databases:
        applied = d.skipped and f"skipped: {d.skipped}" or (", ".join(d.applied) or "-")
        rows.append((d.name, d.url, d.before or "-", d.after or "-", applied))
    return Records(
        "sync", ("Database", "URL", "Before", "After", "Applied"), rows, "No database to sync."
    )


def version_table(result: VersionResult) -> Records:
    """One row per database: current, head, pending, newest release satisfied."""
    rows = [
        (d.name, d.url, d.current or "-", d.head, str(d.pending), d.release or "-")
        for d in result.databases
    ]
    columns = ("Database", "URL", "Current", "Head", "Pending", "Release")
    return Records("version", columns, rows, "No database.", right=frozenset({"Pending"}))


def null_uuid_table(result: NullUuidResult) -> Records:
    """Rows with a NULL instance uuid, per database and table; a sentence when there are none."""
    rows = [
        (d.name, name, str(count))
        for d in result.databases
        for name, count in sorted(d.rows.items())
        if count or result.deleted
    ]
    checked = len(result.databases)
    return Records(
        "rows deleted" if result.deleted else "rows with NULL instance uuid",
        ("Database", "Table", "Rows"),
        rows,
        f"No rows with a NULL instance uuid in {checked} database{'s' if checked != 1 else ''}.",
        right=frozenset({"Rows"}),
    )


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


def check_table(result: CheckResult, options: str = "") -> Group:
    """Findings, worst first: what and where, why in a sentence, and the command that fixes it.

    A block per finding rather than a table: summaries and fixes are
    sentences and commands, which a table column would wrap unreadably.
    Fix commands carry ``options`` (see :func:`with_options`).
    """
    parts: list[Text | Padding] = []
    for f in worst_first(result.findings):
        head = Text(f"{f.severity.upper():8}", style=_SEVERITY_STYLE[f.severity])
        subject = f" ({f.subject})" if f.subject else ""
        head.append(f" {f.database}: {f.code}{subject}, {f.count}")
        parts += [
            head,
            Padding(Text(f.summary), (0, 0, 0, 9), expand=False),
            Padding(Text(f"fix: {with_options(f.fix, options)}"), (0, 0, 0, 9), expand=False),
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
