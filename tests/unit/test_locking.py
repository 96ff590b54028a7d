"""novadb.locking.database_lock on SQLite files: one run per database and operation."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from novadb.connections import create_engine
from novadb.errors import LockTimeout
from novadb.locking import database_lock


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nova.sqlite"


@pytest.fixture
def engine(db_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{db_path}", create=True)
    yield engine
    engine.dispose()


@pytest.fixture
def other_engine(db_path: Path, engine: sa.Engine) -> Iterator[sa.Engine]:
    """A second engine on the same file, as a second novadb run would open."""
    other = create_engine(f"sqlite:///{db_path}")
    yield other
    other.dispose()


def test_second_holder_times_out(
    engine: sa.Engine, other_engine: sa.Engine, db_path: Path
) -> None:
    with database_lock(engine, "archive"):
        started = time.monotonic()
        with (
            pytest.raises(LockTimeout) as info,
            database_lock(other_engine, "archive", timeout=0.5),
        ):
            pytest.fail("the lock was taken twice")
        waited = time.monotonic() - started

    assert 0.5 <= waited < 5
    assert info.value.exit_code == 255
    assert str(info.value) == (
        f"another novadb archive is running on sqlite:///{db_path} (held by process "
        f"{os.getpid()}) (waited 0.5 s); let it finish or stop it, then retry"
    )


def test_lock_file_sits_next_to_the_database(engine: sa.Engine, db_path: Path) -> None:
    with database_lock(engine, "archive"):
        pass

    assert (db_path.parent / "nova.sqlite.novadb-archive.lock").is_file()


def test_different_names_do_not_conflict(engine: sa.Engine, other_engine: sa.Engine) -> None:
    with database_lock(engine, "archive"), database_lock(other_engine, "schema", timeout=0.2):
        pass


def test_different_databases_do_not_conflict(engine: sa.Engine, tmp_path: Path) -> None:
    second = create_engine(f"sqlite:///{tmp_path / 'cell1.sqlite'}", create=True)
    try:
        with database_lock(engine, "archive"), database_lock(second, "archive", timeout=0.2):
            pass
    finally:
        second.dispose()


def test_lock_can_be_taken_again_after_release(engine: sa.Engine, other_engine: sa.Engine) -> None:
    with database_lock(engine, "archive"):
        pass
    with database_lock(other_engine, "archive", timeout=0.2):
        pass
    with database_lock(engine, "archive", timeout=0.2):
        pass


def test_lock_released_when_the_body_raises(engine: sa.Engine, other_engine: sa.Engine) -> None:
    with pytest.raises(RuntimeError, match="boom"), database_lock(engine, "archive"):
        raise RuntimeError("boom")

    with database_lock(other_engine, "archive", timeout=0.2):
        pass


def test_waiter_gets_the_lock_when_holder_finishes(
    engine: sa.Engine, other_engine: sa.Engine
) -> None:
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with database_lock(engine, "archive"):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        threading.Timer(0.3, release.set).start()
        started = time.monotonic()
        with database_lock(other_engine, "archive", timeout=10):
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


def test_lock_held_by_another_process(other_engine: sa.Engine, db_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, f"sqlite:///{db_path}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "locked\n"

        with (
            pytest.raises(LockTimeout, match="another novadb archive is running"),
            database_lock(other_engine, "archive", timeout=0.3),
        ):
            pass

        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(10) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()

    with database_lock(other_engine, "archive", timeout=0.2):
        pass


def test_lock_released_when_holder_process_dies(other_engine: sa.Engine, db_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, f"sqlite:///{db_path}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
    finally:
        holder.kill()
        holder.wait()

    with database_lock(other_engine, "archive", timeout=2):
        pass


def test_in_memory_sqlite_needs_no_lock() -> None:
    engine = create_engine("sqlite://")
    try:
        with database_lock(engine, "archive"), database_lock(engine, "archive", timeout=0.1):
            pass
    finally:
        engine.dispose()
