"""novadb.connections: masking URLs and opening engines that fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from novadb import connections
from novadb.connections import create_engine, mask, parse_url
from novadb.errors import ConfigError, DatabaseUnreachable
from sqlalchemy.engine import make_url


@pytest.fixture
def no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connection-refused retries without the back-off sleeps."""
    retrying = connections._connect_once.retry  # pyright: ignore[reportFunctionMemberAccess]
    monkeypatch.setattr(retrying, "sleep", lambda _seconds: None)


# -- mask -------------------------------------------------------------------------


def test_mask_hides_mysql_password_in_string() -> None:
    assert (
        mask("mysql+pymysql://nova:s3cret@db.example:3306/nova?charset=utf8")
        == "mysql+pymysql://nova:***@db.example:3306/nova?charset=utf8"
    )


def test_mask_hides_mysql_password_in_url_object() -> None:
    url = make_url("mysql+pymysql://nova:s3cret@db.example/nova")

    assert mask(url) == "mysql+pymysql://nova:***@db.example/nova"


def test_mask_hides_url_encoded_password() -> None:
    masked = mask("mysql+pymysql://nova:p%40ss%2Fword@db/nova")

    assert masked == "mysql+pymysql://nova:***@db/nova"


def test_mask_leaves_urls_without_password_alone() -> None:
    assert mask("sqlite:///nova.sqlite") == "sqlite:///nova.sqlite"
    assert mask("sqlite:////var/lib/nova/nova.sqlite") == "sqlite:////var/lib/nova/nova.sqlite"
    assert mask("mysql+pymysql://root@127.0.0.1:3306/nova") == (
        "mysql+pymysql://root@127.0.0.1:3306/nova"
    )


def test_mask_unparsable_string_with_password() -> None:
    # A space in the scheme: not a URL SQLAlchemy can parse.
    assert mask("my sql://nova:s3cret@db/nova") == "my sql://nova:***@db/nova"


def test_mask_unparsable_string_without_credentials_is_unchanged() -> None:
    assert mask("not a url at all") == "not a url at all"


def test_mask_url_with_bad_port() -> None:
    assert mask("mysql+pymysql://nova:s3cret@db:33o6/nova") == (
        "mysql+pymysql://nova:***@db:33o6/nova"
    )


def test_parse_url_with_bad_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a database URL"):
        parse_url("mysql+pymysql://nova:s3cret@db:33o6/nova")


def test_mask_password_with_unencoded_at_sign() -> None:
    assert "ss@" not in mask("mysql+pymysql://nova:p@ss@db/nova")


def test_parse_url_rejects_garbage_with_masked_message() -> None:
    with pytest.raises(ConfigError) as info:
        parse_url("my sql://nova:s3cret@db/nova")

    assert str(info.value) == "not a database URL: my sql://nova:***@db/nova"


def test_parse_url_passes_url_objects_through() -> None:
    url = make_url("sqlite:///x.db")

    assert parse_url(url) is url


# -- create_engine on SQLite -------------------------------------------------------


def test_missing_sqlite_file_is_unreachable_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nova.sqlite"

    with pytest.raises(DatabaseUnreachable) as info:
        create_engine(f"sqlite:///{path}")

    assert info.value.exit_code == 3
    assert str(info.value) == (
        f"SQLite database {path} does not exist; run `novadb sync` first or check the URL"
    )
    assert not path.exists()


def test_missing_relative_sqlite_file_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(DatabaseUnreachable, match="SQLite database nova.sqlite does not exist"):
        create_engine("sqlite:///nova.sqlite")

    assert list(tmp_path.iterdir()) == []


def test_create_true_creates_sqlite_file_and_parents(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "nova.sqlite"

    engine = create_engine(f"sqlite:///{path}", create=True)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            # Concurrent writers wait instead of failing at once.
            assert conn.execute(sa.text("PRAGMA busy_timeout")).scalar() == 30000
    finally:
        engine.dispose()

    assert path.is_file()


def test_existing_sqlite_file_opens_without_create(tmp_path: Path) -> None:
    path = tmp_path / "nova.sqlite"
    create_engine(f"sqlite:///{path}", create=True).dispose()

    engine = create_engine(f"sqlite:///{path}")
    engine.dispose()

    assert engine.url.database == str(path)


def test_in_memory_sqlite_needs_no_file() -> None:
    engine = create_engine("sqlite://")
    engine.dispose()


def test_unsupported_driver_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        create_engine("nosuchdb://user:s3cret@host/db")

    assert str(info.value).startswith("unsupported database URL nosuchdb://user:***@host/db: ")
    assert "s3cret" not in str(info.value)


# -- create_engine on MariaDB --------------------------------------------------------


def test_mysql_wrong_password(mysql_url_base: str) -> None:
    url = make_url(mysql_url_base).set(password="n0t-the-r1ght-one", database="mysql")

    with pytest.raises(DatabaseUnreachable) as info:
        create_engine(url.render_as_string(hide_password=False))

    message = str(info.value)
    assert info.value.exit_code == 3
    assert "n0t-the-r1ght-one" not in message
    assert f"{url.username}:***@" in message
    assert "Access denied" in message
    assert message.endswith("check the user and password in the connection URL")
    assert "\n" not in message


def test_mysql_unknown_database(mysql_url_base: str) -> None:
    url = make_url(mysql_url_base).set(database="novadb_no_such_database")

    with pytest.raises(DatabaseUnreachable) as info:
        create_engine(url.render_as_string(hide_password=False))

    message = str(info.value)
    assert info.value.exit_code == 3
    assert "novadb_no_such_database" in message
    assert message.endswith("the database does not exist; create it first")


def test_mysql_server_not_listening(no_retry_wait: None) -> None:
    with pytest.raises(DatabaseUnreachable) as info:
        create_engine("mysql+pymysql://nova:s3cret@127.0.0.1:1/nova")

    message = str(info.value)
    assert info.value.exit_code == 3
    assert message.startswith("cannot connect to mysql+pymysql://nova:***@127.0.0.1:1/nova: ")
    assert "s3cret" not in message
    assert message.endswith("is the server running and reachable?")


def test_mysql_session_settings(mysql_db: str) -> None:
    engine = create_engine(mysql_db)
    try:
        assert engine.url.query["charset"] == "utf8mb4"
        with engine.connect() as conn:
            sql_mode = str(conn.execute(sa.text("SELECT @@SESSION.sql_mode")).scalar_one())
            charset = conn.execute(sa.text("SELECT @@SESSION.character_set_client")).scalar()
    finally:
        engine.dispose()

    assert "STRICT_TRANS_TABLES" in sql_mode.split(",")
    assert charset == "utf8mb4"
