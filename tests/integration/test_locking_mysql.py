"""novadb.locking.database_lock on MariaDB: GET_LOCK tied to a session."""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from novadb.connections import create_engine
from novadb.errors import LockTimeout
from novadb.locking import database_lock
from sqlalchemy.engine import make_url


@pytest.fixture
def engines(mysql_db: str) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    """Two engines on one database, as two novadb runs would open."""
    first, second = create_engine(mysql_db), create_engine(mysql_db)
    yield first, second
    first.dispose()
    second.dispose()


def test_second_engine_times_out(engines: tuple[sa.Engine, sa.Engine], mysql_db: str) -> None:
    first, second = engines

    with (
        database_lock(first, "archive"),
        pytest.raises(LockTimeout) as info,
        database_lock(second, "archive", timeout=0.5),
    ):
        pytest.fail("the lock was taken twice")

    assert info.value.exit_code == 255
    message = str(info.value)
    assert message.startswith("another novadb archive is running on ")
    database = make_url(mysql_db).database
    assert database is not None
    assert f"/{database}" in message
    assert message.endswith("(waited 0.5 s); let it finish or stop it, then retry")


def test_fractional_timeout_is_waited_for(engines: tuple[sa.Engine, sa.Engine]) -> None:
    first, second = engines

    with database_lock(first, "archive"):
        started = time.monotonic()
        with pytest.raises(LockTimeout), database_lock(second, "archive", timeout=0.5):
            pass
        waited = time.monotonic() - started

    assert waited >= 0.45


def test_message_masks_the_password(mysql_url_base: str, mysql_db: str) -> None:
    database = make_url(mysql_db).database
    user = f"novadb_lock_{secrets.token_hex(4)}"
    root = sa.create_engine(mysql_url_base)
    with root.begin() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'L0ck-s3cret'"))
        conn.execute(sa.text(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'"))
    url = make_url(mysql_db).set(username=user, password="L0ck-s3cret")
    first = create_engine(url.render_as_string(hide_password=False))
    second = create_engine(url.render_as_string(hide_password=False))
    try:
        with (
            database_lock(first, "schema"),
            pytest.raises(LockTimeout) as info,
            database_lock(second, "schema", timeout=0),
        ):
            pass
    finally:
        first.dispose()
        second.dispose()
        with root.begin() as conn:
            conn.execute(sa.text(f"DROP USER '{user}'@'%'"))
        root.dispose()

    message = str(info.value)
    assert "L0ck-s3cret" not in message
    assert f"another novadb schema is running on mysql+pymysql://{user}:***@" in message


def test_different_names_do_not_conflict(engines: tuple[sa.Engine, sa.Engine]) -> None:
    first, second = engines

    with database_lock(first, "archive"), database_lock(second, "schema", timeout=0.5):
        pass


def test_different_databases_do_not_conflict(mysql_dbs: Callable[[], str]) -> None:
    first, second = create_engine(mysql_dbs()), create_engine(mysql_dbs())
    try:
        with database_lock(first, "archive"), database_lock(second, "archive", timeout=0.5):
            pass
    finally:
        first.dispose()
        second.dispose()


def test_lock_can_be_taken_again_after_release(engines: tuple[sa.Engine, sa.Engine]) -> None:
    first, second = engines

    with database_lock(first, "archive"):
        pass
    with database_lock(second, "archive", timeout=0.5):
        pass
    with database_lock(first, "archive", timeout=0.5):
        pass


def test_lock_released_when_the_body_raises(engines: tuple[sa.Engine, sa.Engine]) -> None:
    first, second = engines

    with pytest.raises(RuntimeError, match="boom"), database_lock(first, "archive"):
        raise RuntimeError("boom")

    with database_lock(second, "archive", timeout=0.5):
        pass


def test_waiter_gets_the_lock_when_holder_finishes(
    engines: tuple[sa.Engine, sa.Engine],
) -> None:
    first, second = engines
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with database_lock(first, "archive"):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        threading.Timer(0.3, release.set).start()
        started = time.monotonic()
        with database_lock(second, "archive", timeout=10):
            waited = time.monotonic() - started
    finally:
        release.set()
        thread.join(10)

    assert 0.2 <= waited < 5


HOLDER = """
import sys
from novadb.connections import create_engine
from novadb.locking import database_lock

engine = create_engine(sys.argv[1])
with database_lock(engine, "archive"):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_lock_released_when_the_holding_process_dies(
    engines: tuple[sa.Engine, sa.Engine], mysql_db: str
) -> None:
    _first, second = engines
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, mysql_db],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(LockTimeout), database_lock(second, "archive", timeout=0):
            pass
    finally:
        holder.kill()  # a crashed run: its session dies with it
        holder.wait()

    with database_lock(second, "archive", timeout=5):
        pass
