"""The demo's cloud at 2025.1, on SQLite, for the check action's tests.

``make_template`` builds it once per worker with ``novadb.sample.demo.build_cloud``:
API, cell0, cell1 and Placement, mapped, with what a cloud has before an
upgrade (an online migration still to run, soft-deleted rows to archive,
Placement providers under stale uuids).  ``copy_cloud`` gives a test its own
copy, the cell mappings pointed at it, and the nova.conf that names it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from novadb.config import Settings, load_settings
from novadb.connections import engine_for
from novadb.sample.demo import build_cloud

INSTANCES = 40
FILES = {"main": "cell1", "api": "nova_api", "placement": "placement"}


def make_template(directory: Path) -> None:
    """The demo's four databases in ``directory``."""
    build_cloud(directory, INSTANCES, lambda _event: None)


@dataclass(frozen=True)
class DemoCloud:
    """A copy of the template and the nova.conf naming it."""

    directory: Path
    conf: Path
    settings: Settings

    def count(self, db: str, sql: str) -> int:
        with engine_for(self.settings.url(db)) as engine, engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())


def copy_cloud(template: Path, base: Path) -> DemoCloud:
    """The template's databases copied to ``base/db``; ``base/nova.conf`` names them."""
    directory = base / "db"
    directory.mkdir(parents=True)
    for path in template.glob("*.sqlite"):
        shutil.copy2(path, directory / path.name)
    urls = {db: f"sqlite:///{directory / name}.sqlite" for db, name in FILES.items()}
    with engine_for(urls["api"]) as api, api.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE cell_mappings SET database_connection = "
                "replace(database_connection, :old, :new)"
            ),
            {"old": str(template), "new": str(directory)},
        )
    conf = base / "nova.conf"
    conf.write_text(
        f"[database]\nconnection = {urls['main']}\n\n"
        f"[api_database]\nconnection = {urls['api']}\n\n"
        f"[placement_database]\nconnection = {urls['placement']}\n"
    )
    return DemoCloud(directory, conf, load_settings([str(conf)]))
