"""Turn result objects into tables (people) or JSON (machines).

Renderers are separate from operations: the library returns dataclasses, the
CLI picks a renderer, the charm flattens the same objects into action results.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from novadb.null_uuid import NullUuidResult
from novadb.sync import SyncResult, VersionResult


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


def show(console: Console, renderable: Any) -> None:
    """Print a table (or text) to the console."""
    console.print(renderable)
