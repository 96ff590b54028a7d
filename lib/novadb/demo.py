"""``demo``: a sample cloud on SQLite, so anyone can see novadb work.

It creates an API database, cell0, cell1 and a Placement database in a
directory it names, maps the cells the way ``nova-manage cell_v2`` does, syncs
everything and reports each database's version.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from novadb.cells import CELL0_UUID
from novadb.config import load_settings
from novadb.connections import engine_for
from novadb.progress import Event, Progress, ignore
from novadb.sync import SyncResult, VersionResult, sync, version


@dataclass(frozen=True)
class DemoResult:
    """Where the demo cloud lives and what each step returned."""

    directory: str
    sync: SyncResult
    version: VersionResult


def _map_cells(api_url: str, directory: Path) -> None:
    with engine_for(api_url) as engine:
        mappings = sa.Table("cell_mappings", sa.MetaData(), autoload_with=engine)
        with engine.begin() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(mappings)).scalar_one():
                return
            for cell_uuid, name in ((CELL0_UUID, "cell0"), (str(uuid.uuid4()), "cell1")):
                conn.execute(
                    sa.insert(mappings).values(
                        uuid=cell_uuid,
                        name=name,
                        transport_url="none:///",
                        database_connection=f"sqlite:///{directory / (name + '.sqlite')}",
                        disabled=False,
                    )
                )


def run_demo(directory: str | None = None, *, progress: Progress = ignore) -> DemoResult:
    """Build (or reuse) the sample cloud in ``directory`` and sync it."""
    path = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="novadb-demo-"))
    path.mkdir(parents=True, exist_ok=True)
    path = path.resolve()
    api = f"sqlite:///{path / 'nova_api.sqlite'}"
    settings = load_settings(
        database=f"sqlite:///{path / 'cell1.sqlite'}",
        api_database=api,
        placement_database=f"sqlite:///{path / 'placement.sqlite'}",
    )
    progress(Event("demo", "step", f"sample cloud in {path}"))
    sync(settings, "api", progress=progress)
    _map_cells(api, path)
    progress(Event("demo", "step", "mapped cell0 and cell1"))
    result = sync(settings, progress=progress)
    return DemoResult(str(path), result, version(settings))
