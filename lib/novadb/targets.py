"""Which concrete databases an operation acts on.

``api`` and ``placement`` are one database each.  ``main`` is cell0 plus every
mapped cell (from the API database's ``cell_mappings``), plus ``[database]``
when no mapping points at it; ``local_cell`` narrows main to ``[database]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine, make_url

from novadb.cells import Cell, list_cells
from novadb.config import Settings
from novadb.connections import engine_for, is_sqlite, parse_url, sqlite_path
from novadb.errors import BadInput

CHOICES = ("all", "api", "main", "placement")


@dataclass(frozen=True)
class Target:
    """One database: its display name, its Alembic environment, its URL."""

    name: str
    environment: str
    url: str
    cell: Cell | None = None


def same_database(a: str, b: str) -> bool:
    """True when two URLs name the same database (SQLite: the same file)."""
    ua, ub = make_url(a), make_url(b)
    if is_sqlite(ua) and is_sqlite(ub):
        pa, pb = sqlite_path(ua), sqlite_path(ub)
        return pa is not None and pb is not None and pa.resolve() == pb.resolve()
    return ua.render_as_string(hide_password=False) == ub.render_as_string(hide_password=False)


def api_exists(settings: Settings) -> bool:
    """False only for a SQLite API database whose file is not there yet."""
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
