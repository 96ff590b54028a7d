"""One run per database: an advisory lock held for the whole operation.

MySQL/MariaDB: ``GET_LOCK`` on a dedicated connection (the lock is tied to the
session, so a crashed run releases it when its connection dies).  SQLite: an
``fcntl`` lock on ``<database>.novadb.lock`` next to the file, released by the
kernel when the process dies.  A second run waits up to ``timeout`` seconds,
then fails with :class:`LockTimeout`.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from novadb.connections import is_sqlite, mask, sqlite_path
from novadb.errors import LockTimeout

DEFAULT_TIMEOUT = 60.0


@contextmanager
def database_lock(engine: Engine, name: str, timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Hold the advisory lock ``novadb.<name>`` on ``engine``'s database."""
    if is_sqlite(engine.url):
        with _file_lock(engine, name, timeout):
            yield
    else:
        with _mysql_lock(engine, name, timeout):
            yield


def _busy(engine: Engine, name: str, timeout: float) -> LockTimeout:
    return LockTimeout(
        f"another novadb {name} is running on {mask(engine.url)} (waited {timeout:g} s); "
        "let it finish or stop it, then retry",
        exit_code=255,
    )


@contextmanager
def _mysql_lock(engine: Engine, name: str, timeout: float) -> Iterator[None]:
    database = engine.url.database or ""
    # GET_LOCK names are server-wide and limited to 64 characters.
    key = f"novadb.{name}.{database}"[:64]
    with engine.connect() as conn:
        got = conn.execute(sa.select(sa.func.get_lock(key, timeout))).scalar()
        conn.commit()
        if got != 1:
            raise _busy(engine, name, timeout)
        try:
            yield
        finally:
            conn.execute(sa.select(sa.func.release_lock(key)))
            conn.commit()


@contextmanager
def _file_lock(engine: Engine, name: str, timeout: float) -> Iterator[None]:
    path = sqlite_path(engine.url)
    if path is None:  # in-memory: one process, nothing to share
        yield
        return
    lock_path = path.with_name(f"{path.name}.novadb-{name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _busy(engine, name, timeout) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
