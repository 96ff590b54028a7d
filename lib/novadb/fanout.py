"""Run one piece of work on each cell database, a few at a time.

``--all-cells`` means cell0 and every mapped cell, read from the API database;
without it, the local ``[database]``.  Each cell gets its own engine, opened
and disposed inside its worker, so a slow or broken cell holds nothing of the
others.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.engine import Engine

from novadb.cells import list_cells
from novadb.config import Settings
from novadb.connections import engine_for

T = TypeVar("T")


@dataclass(frozen=True)
class CellTarget:
    """A cell database to work on: its label for results, its identity for messages."""

    name: str
    url: str
    identity: str  # nova-manage's "DB" or "Cell <uuid>(<name>)"


def cell_targets(
    settings: Settings, api_engine: Engine | None, *, all_cells: bool
) -> list[CellTarget]:
    """cell0 and every mapped cell with ``all_cells``, else the local database."""
    if all_cells and api_engine is not None:
        cells = list_cells(api_engine, settings.main)
        if cells:
            return [CellTarget(c.label, c.url, f"Cell {c.uuid}({c.name or ''})") for c in cells]
    return [CellTarget("main", settings.url("main"), "DB")]


def run_cells(
    cells: list[CellTarget], work: Callable[[CellTarget, Engine], T], *, workers: int = 4
) -> list[T]:
    """``work(cell, engine)`` for every cell, at most ``workers`` at once, in cell order."""

    def one(cell: CellTarget) -> T:
        with engine_for(cell.url) as engine:
            return work(cell, engine)

    if len(cells) == 1:
        return [one(cells[0])]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(cells)))) as pool:
        return list(pool.map(one, cells))
