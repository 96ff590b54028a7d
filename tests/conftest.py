"""Fixtures shared by every test: MariaDB databases and a SQLite working directory.

MariaDB comes from ``NOVADB_TEST_MYSQL_URL`` (``./run-tests`` sets it, starting
a throwaway server when none is running).  Each test gets databases of its own,
named ``novadb_t_<xdist worker>_<random>``, dropped when it ends.  Without a
server the MariaDB tests are skipped, except in CI (``CI=true``) where they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pymysql
import pytest
from novadb import config
from sqlalchemy.engine import URL, make_url

DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/"
MYSQL_FIXTURES = frozenset({"mysql_url_base", "mysql_db", "mysql_dbs"})


def _connect(url: URL) -> pymysql.connections.Connection:
    kwargs: dict = {
        "user": url.username or "root",
        "password": url.password or "",
        "connect_timeout": 5,
        "autocommit": True,
        "charset": "utf8mb4",
    }
    if "unix_socket" in url.query:
        kwargs["unix_socket"] = url.query["unix_socket"]
    else:
        kwargs["host"] = url.host or "127.0.0.1"
        kwargs["port"] = url.port or 3306
    return pymysql.connect(**kwargs)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a MariaDB fixture ``mariadb``."""
    for item in items:
        if MYSQL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mariadb)


@pytest.fixture(scope="session")
def mysql_url_base() -> str:
    """The server's URL (no database in it); skip, or fail in CI, when it does not answer."""
    raw = os.environ.get("NOVADB_TEST_MYSQL_URL") or DEFAULT_MYSQL_URL
    url = make_url(raw)
    if url.database:
        pytest.fail(
            f"NOVADB_TEST_MYSQL_URL names a database ({url.database}); "
            f"give the server only, e.g. {DEFAULT_MYSQL_URL}",
            pytrace=False,
        )
    try:
        _connect(url).close()
    except pymysql.MySQLError as exc:
        error = exc
    else:
        return raw
    message = (
        f"MariaDB at {url.render_as_string(hide_password=True)} is not usable: {error}; "
        "run the tests with ./run-tests, or set NOVADB_TEST_MYSQL_URL"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (MariaDB tests never skip in CI)", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def mysql_dbs(mysql_url_base: str) -> Iterator[Callable[[], str]]:
    """A function that creates an empty utf8mb4 database and returns its URL.

    Every database it made is dropped when the test ends.
    """
    base = make_url(mysql_url_base)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    created: list[str] = []
    conn = _connect(base)

    def new_db() -> str:
        name = f"novadb_t_{worker}_{secrets.token_hex(6)}"
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
            )
        created.append(name)
        return base.set(database=name).render_as_string(hide_password=False)

    try:
        yield new_db
    finally:
        try:
            with conn.cursor() as cur:
                # Do not hang forever behind a connection the test left open.
                cur.execute("SET SESSION lock_wait_timeout = 60")
                for name in created:
                    cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()


@pytest.fixture
def mysql_db(mysql_dbs: Callable[[], str]) -> str:
    """The URL of an empty utf8mb4 database of this test's own."""
    return mysql_dbs()


# nova.conf of the fake /etc/nova that CLI tests run under: SQLite files named
# relative to the working directory.
SQLITE_NOVA_CONF = (
    "[database]\nconnection = sqlite:///nova.sqlite\n"
    "[api_database]\nconnection = sqlite:///nova_api.sqlite\n"
    "[placement_database]\nconnection = sqlite:///placement.sqlite\n"
)


@pytest.fixture
def etc_nova(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake root for nova-manage's default files: ``etc/nova/nova.conf`` names SQLite files.

    ``novadb`` run in-process with no --config-file reads it (as it would read
    /etc/nova/nova.conf); returns ``etc/nova``.
    """
    root = tmp_path_factory.mktemp("root")
    etc = root / "etc" / "nova"
    etc.mkdir(parents=True)
    (etc / "nova.conf").write_text(SQLITE_NOVA_CONF, encoding="utf-8")
    monkeypatch.setattr(config, "NOVA_MANAGE_ROOT", root)
    return etc


@pytest.fixture
def sqlite_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, etc_nova: Path) -> Path:
    """An empty working directory where the fake /etc/nova/nova.conf's SQLite files land."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(params=["sqlite", "mariadb"])
def new_db(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """A factory of fresh, empty databases: SQLite files, then (second run) MariaDB databases."""
    if request.param == "sqlite":
        return lambda: f"sqlite:///{tmp_path / secrets.token_hex(4)}.sqlite"
    return request.getfixturevalue("mysql_dbs")


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Callable[[], str]:
    """A factory of fresh SQLite database files, for tests where the dialect does not matter."""
    return lambda: f"sqlite:///{tmp_path / secrets.token_hex(4)}.sqlite"
