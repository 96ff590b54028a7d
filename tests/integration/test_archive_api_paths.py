"""The API rows of archived instances: in the cell's own transaction, or by a second engine.

When the API database is on the cell's server and the cell's user may write
it, archive deletes the API rows in the batch's transaction; otherwise (here:
a cell user without rights on the API database) through the API engine,
committed just before the cell.  Both must end in the same state.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pymysql
import sqlalchemy as sa
from novadb.archive.archive import ArchiveOptions, archive_cell
from novadb.config import load_settings
from novadb.connections import create_engine
from novadb.sample.cloud import CloudSpec, populate
from novadb.schema.sync import sync
from sqlalchemy.engine import make_url

API_TABLES = ("instance_mappings", "request_specs", "instance_group_member")


def _state(cell: sa.Engine, api: sa.Engine) -> dict[str, int]:
    out = {}
    for engine, names in ((cell, ("instances", "shadow_instances")), (api, API_TABLES)):
        with engine.connect() as conn:
            for name in names:
                query = sa.select(sa.func.count()).select_from(sa.table(name))
                out[name] = int(conn.execute(query).scalar_one())
    return out


def test_inline_and_separate_api_deletes_end_alike(mysql_dbs: Callable[[], str]) -> None:
    results = []
    for separate in (False, True):
        cell_url, api_url, placement_url = mysql_dbs(), mysql_dbs(), mysql_dbs()
        sync(
            load_settings(
                database=cell_url, api_database=api_url, placement_database=placement_url
            )
        )
        cell, api = create_engine(cell_url), create_engine(api_url)
        populate(cell, api, CloudSpec(instances=120, deleted_fraction=0.5, seed=11))
        cell.dispose()
        user = None
        admin: pymysql.connections.Connection | None = None
        if separate:
            # A cell user that may not touch the API database.
            url = make_url(cell_url)
            user = f"novadb_cell_{secrets.token_hex(4)}"
            admin = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                                    password=url.password or "", autocommit=True)  # fmt: skip
            with admin.cursor() as cur:
                cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
                cur.execute(f"GRANT ALL ON `{url.database}`.* TO '{user}'@'%'")
            cell_url = url.set(username=user, password="pw").render_as_string(hide_password=False)
        cell = create_engine(cell_url)
        try:
            run = archive_cell(cell, api, ArchiveOptions(until_complete=True))
            assert run.failures == []
            assert run.api_rows["instance_mappings"] == run.rows["instances"] > 0
            results.append((_state(cell, api), run.rows, run.api_rows))
        finally:
            cell.dispose()
            api.dispose()
            if user is not None and admin is not None:
                with admin.cursor() as cur:
                    cur.execute(f"DROP USER '{user}'@'%'")
                admin.close()
    inline, separate_run = results
    assert inline == separate_run
    state = inline[0]
    assert state["instance_mappings"] == state["instances"]  # only live instances keep theirs
