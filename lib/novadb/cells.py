"""Cells: which main databases exist, read from the API database.

A cell mapping's ``database_connection`` may be a template whose fields are
filled from ``[database]/connection``, as Nova's CellMapping does: ``{scheme}``,
``{username}``, ``{password}``, ``{hostname}``, ``{port}``, ``{path}``,
``{query}``, ``{fragment}`` (and indexed ``{hostname1}``... for multi-host URLs).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from novadb.connections import mask
from novadb.errors import ConfigError

CELL0_UUID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Cell:
    """One cell database: its mapping (or none, for the local ``[database]``)."""

    uuid: str | None
    name: str | None
    url: str

    @property
    def is_cell0(self) -> bool:
        """cell0 holds the instances that never got scheduled."""
        return self.uuid == CELL0_UUID

    @property
    def label(self) -> str:
        """Short name for results and progress: cell name, else uuid, else 'main'."""
        return self.name or self.uuid or "main"


def _split_netloc(netloc: str) -> dict[str, str | None]:
    user_pass, _, host_port = netloc.rpartition("@")
    out: dict[str, str | None] = {
        "username": None,
        "password": None,
        "hostname": None,
        "port": None,
    }
    if host_port.startswith("["):
        end = host_port.find("]")
        if end < 0:
            raise ValueError("invalid IPv6 address in URL")
        out["hostname"], out["port"] = host_port[1:end], host_port[end + 2 :] or None
    elif ":" in host_port:
        out["hostname"], out["port"] = host_port.split(":", 1)
    else:
        out["hostname"] = host_port
    if ":" in user_pass:
        out["username"], out["password"] = user_pass.split(":", 1)
    else:
        out["username"] = user_pass or None
    return out


def format_cell_url(template: str, default: str | None, cell: str) -> str:
    """Fill a cell's ``database_connection`` template from ``[database]/connection``."""
    if "{" not in template:
        return template
    if default is None:
        raise ConfigError(
            f"cell {cell}: database_connection is a template but [database]/connection "
            "is not set; set it or pass --database URL"
        )
    try:
        subs = _template_fields(default)
        return template.format(**subs)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"cell {cell}: cannot fill database_connection template {mask(template)}: "
            f"unknown or malformed field {exc}"
        ) from exc


def _template_fields(default: str) -> dict[str, object]:
    """Nova's substitutions: the parts of ``[database]/connection``."""
    parts = urlparse(default)
    subs: dict[str, object] = {
        "scheme": parts.scheme,
        "username": parts.username,
        "password": parts.password,
        "hostname": parts.hostname,
        "port": parts.port,
        "path": parts.path.lstrip("/"),
        "query": parts.query,
        "fragment": parts.fragment,
    }
    if "," in parts.netloc:
        for index, netloc in enumerate(parts.netloc.split(","), start=1):
            for key, value in _split_netloc(netloc).items():
                subs[f"{key}{index}"] = value
    return subs


def list_cells(api_engine: Engine, default_main: str | None) -> list[Cell]:
    """Every cell mapping in id order, cell0 included, templates filled."""
    inspector = sa.inspect(api_engine)
    if not inspector.has_table("cell_mappings"):
        return []
    table = sa.Table("cell_mappings", sa.MetaData(), autoload_with=api_engine)
    query = sa.select(table.c.uuid, table.c.name, table.c.database_connection).order_by(table.c.id)
    with api_engine.connect() as conn:
        rows = conn.execute(query).all()
    cells = []
    for uuid, name, connection in rows:
        label = name or uuid
        if not connection:
            raise ConfigError(f"cell {label} has no database_connection in cell_mappings")
        cells.append(
            Cell(uuid=uuid, name=name, url=format_cell_url(connection, default_main, label))
        )
    return cells
