"""Which concrete databases an operation acts on.

``api`` and ``placement`` are one database each.  ``main`` is cell0 plus every
mapped cell (from the API database's ``cell_mappings``), plus ``[database]``
when no mapping points at it; ``local_cell`` narrows main to ``[database]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from novadb.cells import Cell, list_cells
from novadb.config import Settings
from novadb.connections import engine_for, is_sqlite, parse_url, same_database, sqlite_path
from novadb.errors import BadInput

CHOICES = ("all", "api", "main", "placement")


@dataclass(frozen=True)
class Target:
    """One database: its display name, its Alembic environment, its URL."""

    name: str
    environment: str
    url: str
    cell: Cell | None = None


def api_exists(settings: Settings) -> bool:
    """False for an API database that is not configured, or a SQLite file not there yet.

    Without one, the cell operations work on ``[database]`` alone (as
    ``--database URL version --database main`` asks).
    """
    if settings.api is None:
        return False
    url = parse_url(settings.url("api"))
    path = sqlite_path(url) if is_sqlite(url) else None
    return path is None or path.exists()


def main_targets(
    settings: Settings, api_engine: Engine | None, *, local_cell: bool
) -> list[Target]:
    """cell0 and every mapped cell (or just ``[database]`` with ``local_cell``)."""
    local = settings.main
    if local_cell:
        return [Target("main", "main", settings.url("main"))]
    cells = list_cells(api_engine, local) if api_engine is not None else []
    targets = [Target(c.label, "main", c.url, c) for c in cells]
    if local is not None and not any(same_database(t.url, local) for t in targets):
        targets.append(Target("main", "main", local))
    if not targets:
        targets.append(Target("main", "main", settings.url("main")))
    return targets


def plan(
    settings: Settings, database: str, *, local_cell: bool = False, create: bool = False
) -> list[Target]:
    """Targets in Nova's order: api, cell0, cells (or local), placement."""
    if database not in CHOICES:
        raise BadInput(f"unknown database {database!r}; choose one of {', '.join(CHOICES)}")
    targets: list[Target] = []
    if database in ("all", "api"):
        targets.append(Target("api", "api", settings.url("api")))
    if database in ("all", "main"):
        if not local_cell and api_exists(settings):
            with engine_for(settings.url("api"), create=create) as api_engine:
                targets += main_targets(settings, api_engine, local_cell=local_cell)
        else:
            targets += main_targets(settings, None, local_cell=local_cell)
    if database in ("all", "placement"):
        targets.append(Target("placement", "placement", settings.url("placement")))
    return targets
