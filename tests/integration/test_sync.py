"""sync on real databases: exact parity with Nova 34, takeover, legacy, blockers.

Every test runs on SQLite and on MariaDB (the ``dialect`` parameter).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from novadb.config import Settings, load_settings
from novadb.errors import (
    PLACEMENT_NOT_CONFIGURED,
    BadInput,
    BlockerFound,
    PlacementNotConfigured,
    SchemaError,
    UnknownRevision,
)
from novadb.schema import revisions
from novadb.schema.sync import sync, version

from tests import schema_snapshot

REFERENCE = Path(__file__).resolve().parent.parent / "reference"
MAIN_CHAIN = [
    "8f2f1571d55b",
    "16f1fbcab42b",
    "ccb0fa1a2252",
    "960aac0e09ea",
    "1b91788ec3a6",
    "1acf2c98e646",
    "13863f4e1612",
    "d60bddf7a903",
    "2903cd72dc14",
    "ab450ba04102",
]
API_CHAIN = ["d67eeaabee36", "b30f573d3377", "cdeec0c85668"]
PLACEMENT_CHAIN = ["b4ed3a175331", "611cd6dffd7b", "b5c396305c25", "422ece571366", "a082b8bb98d0"]

NewDb = Callable[[], str]


def _settings(new_db: NewDb) -> Settings:
    return load_settings(database=new_db(), api_database=new_db(), placement_database=new_db())


def _dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "mysql"


def _diff(environment: str, url: str) -> list[str]:
    expected = json.loads((REFERENCE / f"{environment}.{_dialect(url)}.json").read_text())
    return schema_snapshot.diff(expected, schema_snapshot.snapshot(url))


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def _current(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return revisions.current_revision(conn)
    finally:
        engine.dispose()


def test_chains_are_novas_and_have_one_head() -> None:
    assert list(revisions.chain("main")) == MAIN_CHAIN
    assert list(revisions.chain("api")) == API_CHAIN
    assert list(revisions.chain("placement")) == PLACEMENT_CHAIN
    for environment in ("api", "main", "placement"):
        assert len(revisions.script_directory(environment).get_heads()) == 1


def test_sync_from_empty_matches_nova_34_exactly(new_db: NewDb) -> None:
    settings = _settings(new_db)
    result = sync(settings)
    assert [(d.name, d.before, d.after) for d in result.databases] == [
        ("api", None, API_CHAIN[-1]),
        ("main", None, MAIN_CHAIN[-1]),
        ("placement", None, PLACEMENT_CHAIN[-1]),
    ]
    assert [list(d.applied) for d in result.databases] == [API_CHAIN, MAIN_CHAIN, PLACEMENT_CHAIN]
    for name in ("main", "api", "placement"):
        assert _diff(name, settings.url(name)) == [], name
    # A second sync has nothing to do.
    assert sync(settings).applied == 0


def test_walk_one_revision_at_a_time(new_db: NewDb) -> None:
    settings = _settings(new_db)
    for database, chain in (
        ("main", MAIN_CHAIN),
        ("api", API_CHAIN),
        ("placement", PLACEMENT_CHAIN),
    ):
        before = None
        for revision in chain:
            result = sync(settings, database, revision=revision)
            (db,) = result.databases
            assert (db.before, db.after, db.applied) == (before, revision, (revision,))
            before = revision
        assert _diff(database, settings.url(database)) == []


def test_takeover_from_mid_chain_continues_to_head(new_db: NewDb) -> None:
    settings = _settings(new_db)
    sync(settings, "main", revision="1b91788ec3a6")
    sync(settings, "api", revision="d67eeaabee36")
    result = sync(settings)
    by_name = {d.name: d for d in result.databases}
    assert by_name["main"].before == "1b91788ec3a6"
    assert list(by_name["main"].applied) == MAIN_CHAIN[5:]
    assert list(by_name["api"].applied) == API_CHAIN[1:]
    assert _diff("main", settings.url("main")) == []


def test_release_stops_at_that_releases_heads(new_db: NewDb) -> None:
    settings = _settings(new_db)
    sync(settings, release="2023.1")
    heads = {d.name: d.current for d in version(settings).databases}
    assert heads == {"api": "b30f573d3377", "main": "960aac0e09ea", "placement": "422ece571366"}
    releases = {d.name: d.release for d in version(settings).databases}
    assert releases["main"] == "2023.1 (antelope)"
    sync(settings, release="caracal")
    assert {d.name: d.current for d in version(settings).databases} == {
        "api": "cdeec0c85668",
        "main": "13863f4e1612",
        "placement": "a082b8bb98d0",
    }


def _make_legacy(settings: Settings, migrate_version: int) -> None:
    """A database as sqlalchemy-migrate left it: initial schema, no alembic_version."""
    url = settings.url("main")
    sync(settings, "main", revision=MAIN_CHAIN[0])
    _execute(
        url,
        "DROP TABLE alembic_version",
        "CREATE TABLE migrate_version (repository_id VARCHAR(250) NOT NULL PRIMARY KEY, "
        "repository_path TEXT, version INTEGER)",
        f"INSERT INTO migrate_version VALUES ('nova', '/legacy', {migrate_version})",
    )


def test_legacy_database_is_stamped_then_upgraded(new_db: NewDb) -> None:
    settings = _settings(new_db)
    _make_legacy(settings, 422)
    result = sync(settings, "main")
    (db,) = result.databases
    assert db.before is None
    assert list(db.applied) == MAIN_CHAIN  # stamp of the first, then the rest
    assert "migrate_version" not in _tables(settings.url("main"))
    # On MySQL the legacy database's default charset is already utf8 (Nova set it
    # long ago), so the alembic_version table the stamp creates inherits it, as it
    # does when Nova takes over such a database.  Nothing else may differ.
    allowed = {
        "alembic_version: options expected {'mysql_collate': 'utf8mb4_general_ci', "
        "'mysql_default charset': 'utf8mb4'} got {'mysql_default charset': 'utf8mb3', "
        "'mysql_collate': 'utf8mb3_general_ci'}"
    }
    assert set(_diff("main", settings.url("main"))) <= allowed


def test_legacy_database_too_old_is_refused_and_untouched(new_db: NewDb) -> None:
    settings = _settings(new_db)
    _make_legacy(settings, 330)
    before = _tables(settings.url("main"))
    with pytest.raises(SchemaError, match="sqlalchemy-migrate database at version 330"):
        sync(settings, "main")
    assert _tables(settings.url("main")) == before
    assert "alembic_version" not in before


def test_unknown_revision_is_refused_and_untouched(new_db: NewDb) -> None:
    settings = _settings(new_db)
    sync(settings, "api", revision=API_CHAIN[0])
    _execute(settings.url("api"), "UPDATE alembic_version SET version_num = 'deadbeef0000'")
    with pytest.raises(UnknownRevision, match="deadbeef0000.*nothing was changed"):
        sync(settings)
    assert _current(settings.url("api")) == "deadbeef0000"
    assert "instances" not in _tables(settings.url("main"))  # nothing else ran either


def test_tables_without_a_version_are_refused(new_db: NewDb) -> None:
    settings = _settings(new_db)
    _execute(settings.url("placement"), "CREATE TABLE users (id INTEGER PRIMARY KEY)")
    with pytest.raises(SchemaError, match="has tables but no schema version"):
        sync(settings, "placement")
    assert _tables(settings.url("placement")) == {"users"}


def test_bad_revision_is_a_bad_input(new_db: NewDb) -> None:
    settings = _settings(new_db)
    with pytest.raises(BadInput, match="unknown main revision 'ffff'"):
        sync(settings, "main", revision="ffff")
    with pytest.raises(BadInput, match="--revision needs --database"):
        sync(settings, revision=MAIN_CHAIN[0])


def test_placement_blockers_stop_everything_before_any_ddl(new_db: NewDb) -> None:
    settings = _settings(new_db)
    sync(settings, "placement", revision=PLACEMENT_CHAIN[0])
    _execute(
        settings.url("placement"),
        "INSERT INTO resource_providers (id, uuid, name, generation, root_provider_id) "
        "VALUES (7, 'rp-7', 'node7', 0, NULL), (9, 'rp-9', 'node9', 0, NULL)",
        "INSERT INTO allocations (id, resource_provider_id, consumer_id, resource_class_id, used) "
        "VALUES (3, 7, 'no-such-consumer', 0, 1)",
    )
    with pytest.raises(BlockerFound) as caught:
        sync(settings)
    message = str(caught.value)
    assert "2 resource_providers row(s) have root_provider_id NULL (first ids: 7, 9)" in message
    assert "1 allocations row(s) have no consumers record (first ids: 3)" in message
    assert "novadb online-migrate --database placement" in message
    assert "\n" not in message
    # Nothing was migrated anywhere: not the api, not main, not placement.
    assert _tables(settings.url("api")) == set()
    assert _tables(settings.url("main")) == set()
    assert _current(settings.url("placement")) == PLACEMENT_CHAIN[0]

    # Once the data is fixed the same sync goes through.
    _execute(
        settings.url("placement"),
        "UPDATE resource_providers SET root_provider_id = id",
        "INSERT INTO projects (id, external_id) VALUES (1, 'p')",
        "INSERT INTO users (id, external_id) VALUES (1, 'u')",
        "INSERT INTO consumers (id, uuid, project_id, user_id, generation) "
        "VALUES (1, 'no-such-consumer', 1, 1, 0)",
    )
    sync(settings)
    assert _diff("placement", settings.url("placement")) == []


def test_placement_without_its_database_is_skipped_or_refused(new_db: NewDb) -> None:
    api = new_db()
    settings = load_settings(database=new_db(), api_database=api)
    assert settings.placement_is_api
    result = sync(settings)
    placement = result.databases[-1]
    assert (placement.name, placement.skipped) == ("placement", PLACEMENT_NOT_CONFIGURED)
    with pytest.raises(PlacementNotConfigured):
        sync(settings, "placement")


def test_placement_named_as_the_api_database_is_skipped_or_refused(new_db: NewDb) -> None:
    api = new_db()
    settings = load_settings(database=new_db(), api_database=api, placement_database=api)
    assert settings.placement_configured
    placement = sync(settings).databases[-1]
    assert placement.skipped == (
        "Placement shares the API database; Placement 16's schema needs its own database"
    )
    assert _current(api) == API_CHAIN[-1]  # the API's history, not Placement's
    with pytest.raises(BadInput, match=r"set \[placement_database\]/connection of its own$"):
        sync(settings, "placement")


def test_cells_are_synced_in_novas_order(new_db: NewDb) -> None:
    cell0, cell1, local = new_db(), new_db(), new_db()
    settings = load_settings(database=local, api_database=new_db(), placement_database=new_db())
    sync(settings, "api")
    _execute(
        settings.url("api"),
        "INSERT INTO cell_mappings (uuid, name, transport_url, database_connection) VALUES "
        f"('00000000-0000-0000-0000-000000000000', 'cell0', 'none:///', '{cell0}'), "
        f"('c1', 'cell1', 'none:///', '{cell1}')",
    )
    result = sync(settings)
    assert [d.name for d in result.databases] == ["api", "cell0", "cell1", "main", "placement"]
    for url in (cell0, cell1, local):
        assert _current(url) == MAIN_CHAIN[-1]
    local_only = sync(settings, "main", local_cell=True)
    assert [d.name for d in local_only.databases] == ["main"]


def test_legacy_null_instance_uuid_blocks_the_takeover(mysql_dbs: NewDb) -> None:
    # Before Nova's "Enforce unique instance uuid" rule a legacy schema allowed it.
    settings = _settings(mysql_dbs)
    _make_legacy(settings, 402)
    _execute(
        settings.url("main"),
        "SET foreign_key_checks = 0",
        "ALTER TABLE instances MODIFY uuid VARCHAR(36) NULL",
        "INSERT INTO instances (id, uuid, deleted) VALUES (41, NULL, 0), (42, 'ok-uuid', 0)",
    )
    with pytest.raises(
        BlockerFound,
        match=r"1 instances row\(s\) have uuid NULL \(first ids: 41\)"
        r".*novadb null-instance-uuid-scan --delete",
    ):
        sync(settings)
    assert "alembic_version" not in _tables(settings.url("main"))
    assert _tables(settings.url("api")) == set()
