"""novadb.cells: Nova's cell_mappings templates and the cells they name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from novadb.cells import CELL0_UUID, Cell, format_cell_url, list_cells
from novadb.config import load_settings
from novadb.errors import ConfigError
from novadb.schema.sync import sync
from sqlalchemy import event

DEFAULT = "mysql+pymysql://nova:s3cret@db.example:3306/nova?charset=utf8"


# -- format_cell_url ------------------------------------------------------------


def test_every_field_filled_from_database_connection() -> None:
    template = "{scheme}://{username}:{password}@{hostname}:{port}/{path}?{query}"

    assert format_cell_url(template, DEFAULT, "cell1") == DEFAULT


def test_template_replaces_the_database_name() -> None:
    template = "{scheme}://{username}:{password}@{hostname}/nova_cell1?{query}"

    assert (
        format_cell_url(template, DEFAULT, "cell1")
        == "mysql+pymysql://nova:s3cret@db.example/nova_cell1?charset=utf8"
    )


def test_fragment_and_path_without_leading_slash() -> None:
    assert (
        format_cell_url("{path}|{fragment}|{port}", "mysql://u:p@h:3307/nova#frag", "c")
        == "nova|frag|3307"
    )


def test_url_without_template_is_returned_unchanged() -> None:
    url = "mysql+pymysql://other:pw@cell-db/nova_cell2"

    assert format_cell_url(url, DEFAULT, "cell2") == url
    # No [database]/connection needed when there is nothing to fill.
    assert format_cell_url(url, None, "cell2") == url


def test_template_without_database_connection() -> None:
    with pytest.raises(ConfigError) as info:
        format_cell_url("{scheme}://{username}@{hostname}/nova_cell1", None, "cell1")

    message = str(info.value)
    assert message.startswith("cell cell1: database_connection is a template")
    assert "[database]/connection is not set" in message
    assert "--database" in message


def test_unknown_field_names_it_and_hides_passwords() -> None:
    template = "mysql+pymysql://nova:tmplsecret@{hostname}/{bogus}"

    with pytest.raises(ConfigError) as info:
        format_cell_url(template, DEFAULT, "cell1")

    message = str(info.value)
    assert message.startswith("cell cell1: cannot fill database_connection template ")
    assert "'bogus'" in message
    assert "unknown or malformed field" in message
    assert "tmplsecret" not in message
    assert "s3cret" not in message
    assert "nova:***@" in message


def test_malformed_template_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown or malformed field"):
        format_cell_url("{scheme://{hostname}/nova", DEFAULT, "cell1")
    with pytest.raises(ConfigError, match="unknown or malformed field"):
        format_cell_url("{0}://{hostname}/nova", DEFAULT, "cell1")


def test_multi_host_netloc_gives_indexed_fields() -> None:
    default = "mysql://u:p@h1:1,u2:p2@h2:2/db"
    template = (
        "{username1}:{password1}@{hostname1}:{port1}"
        "|{username2}:{password2}@{hostname2}:{port2}|{path}"
    )

    assert format_cell_url(template, default, "c") == "u:p@h1:1|u2:p2@h2:2|db"


def test_multi_host_netloc_ipv6_and_missing_port_or_password() -> None:
    default = "mysql://u:p@[::1]:1,u2@h2/db"

    assert (
        format_cell_url(
            "{hostname1}|{port1}|{hostname2}|{port2}|{username2}|{password2}", default, "c"
        )
        == "::1|1|h2|None|u2|None"
    )


def test_bad_port_in_database_connection_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        format_cell_url("{scheme}://{hostname}/nova_cell1", "mysql://u:p@db:33o6/nova", "c")


# -- list_cells ------------------------------------------------------------------


@pytest.fixture
def api_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    url = f"sqlite:///{tmp_path / 'nova_api.sqlite'}"
    sync(load_settings(api_database=url, database=f"sqlite:///{tmp_path / 'n.sqlite'}"), "api")
    engine = sa.create_engine(url)

    @event.listens_for(engine, "connect")
    def _unordered_reversed(dbapi_connection: Any, _record: Any) -> None:
        # Without ORDER BY, SQLite would now return rows last id first.
        dbapi_connection.execute("PRAGMA reverse_unordered_selects = ON")

    yield engine
    engine.dispose()


def insert_cells(engine: sa.Engine, *rows: tuple[int, str, str | None, str | None]) -> None:
    table = sa.Table("cell_mappings", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        for id_, uuid, name, connection in rows:
            conn.execute(
                sa.insert(table).values(
                    id=id_,
                    uuid=uuid,
                    name=name,
                    transport_url="rabbit://guest:guest@mq:5672/",
                    database_connection=connection,
                )
            )


CELL1 = "3f6c1d2e-7d0a-4d4e-9a57-0f0c5b0c0001"
CELL2 = "3f6c1d2e-7d0a-4d4e-9a57-0f0c5b0c0002"


def test_list_cells_in_id_order_with_templates_filled(api_engine: sa.Engine) -> None:
    insert_cells(
        api_engine,
        (3, CELL2, None, "mysql+pymysql://x:y@cell2-db/nova_cell2"),
        (1, CELL0_UUID, "cell0", "{scheme}://{username}:{password}@{hostname}/nova_cell0"),
        (2, CELL1, "cell1", "{scheme}://{username}:{password}@{hostname}:{port}/nova?{query}"),
    )

    cells = list_cells(api_engine, DEFAULT)

    assert cells == [
        Cell(CELL0_UUID, "cell0", "mysql+pymysql://nova:s3cret@db.example/nova_cell0"),
        Cell(CELL1, "cell1", DEFAULT),
        Cell(CELL2, None, "mysql+pymysql://x:y@cell2-db/nova_cell2"),
    ]
    assert [c.is_cell0 for c in cells] == [True, False, False]
    assert [c.label for c in cells] == ["cell0", "cell1", CELL2]


def test_list_cells_without_mappings(api_engine: sa.Engine) -> None:
    assert list_cells(api_engine, DEFAULT) == []


def test_list_cells_on_a_database_without_cell_mappings(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    try:
        assert list_cells(engine, DEFAULT) == []
    finally:
        engine.dispose()


def test_list_cells_template_needs_database_connection(api_engine: sa.Engine) -> None:
    insert_cells(api_engine, (1, CELL1, "cell1", "{scheme}://{hostname}/nova_cell1"))

    with pytest.raises(ConfigError, match=r"^cell cell1: database_connection is a template"):
        list_cells(api_engine, None)


def test_list_cells_mapping_without_connection(api_engine: sa.Engine) -> None:
    insert_cells(api_engine, (1, CELL1, None, None))

    with pytest.raises(ConfigError) as info:
        list_cells(api_engine, DEFAULT)

    assert str(info.value) == f"cell {CELL1} has no database_connection in cell_mappings"


def test_cell_label_falls_back_to_main() -> None:
    cell = Cell(None, None, "sqlite:///nova.sqlite")

    assert cell.label == "main"
    assert cell.is_cell0 is False
