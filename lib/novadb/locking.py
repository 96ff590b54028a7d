"""One run per database: an advisory lock held for the whole operation.

MySQL/MariaDB: ``GET_LOCK`` on a dedicated connection (the lock is tied to the
session, so a crashed run releases it when its connection dies).  SQLite: an
``fcntl`` lock on ``<database>.novadb-<name>.lock`` next to the file, released
by the kernel when the process dies.  A second run says it is waiting, and for
whom, then waits up to ``timeout`` seconds and fails with :class:`LockTimeout`.

A lock tied to a session can be lost without the run noticing: a server or
proxy closes an idle connection, an operator runs ``KILL``, a Galera node
fails over.  So the lock's connection is pinged in the background (keeping it
from looking idle), and :meth:`HeldLock.verify` (called before every batch)
checks that the server still gives the lock to our session.  A lost lock is
taken again at once when nobody else holds it; when another run took it,
:class:`LockLost` stops this run between batches, so two runs never go on
side by side.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from novadb import dberrors
from novadb.connections import is_sqlite, mask, sqlite_path
from novadb.errors import LockLost, LockTimeout
from novadb.progress import Event, Progress, ignore

DEFAULT_TIMEOUT = 60.0
# Seconds between pings of the lock's connection: well under the idle
# timeouts of proxies in front of MySQL (HAProxy's 90 s in charmed OpenStack).
KEEPALIVE = 20.0


def lock_key(name: str, database: str) -> str:
    """The server-wide ``GET_LOCK`` name of operation ``name`` on ``database``.

    Names are limited to 64 characters and shared by every database of a
    server, so a cut-off name would let two databases share one lock: the
    database is identified by a hash, with a readable prefix.
    """
    digest = hashlib.sha256(database.encode()).hexdigest()[:20]
    return f"novadb.{name[:12]}.{database[:24]}.{digest}"


class HeldLock:
    """A lock this run holds: :meth:`verify` before every batch.

    ``reacquired`` counts the times the lock's session was lost and the lock
    taken again (nobody else had it).
    """

    def __init__(self) -> None:
        self.reacquired = 0

    def verify(self) -> None:
        """Raise :class:`LockLost` when another run holds the lock now."""

    def close(self) -> None:
        """Stop background work (the lock itself is released by its context)."""


class _MysqlLock(HeldLock):
    def __init__(self, engine: Engine, name: str, key: str, progress: Progress) -> None:
        super().__init__()
        self.engine = engine
        self.name = name
        self.key = key
        self.progress = progress
        self.conn: Connection | None = None
        self.lost: str | None = None  # why the session is gone, seen by the keep-alive
        self._mutex = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking it ---------------------------------------------------------
    def acquire(self, timeout: float) -> None:
        conn = self.engine.connect()
        try:
            if not self._get(conn, 0):
                holder = _holder(conn, self.key)
                self.progress(Event(
                    "lock", "warning",
                    f"waiting up to {timeout:g} s for another novadb {self.name} on "
                    f"{mask(self.engine.url)} to finish{holder}",
                ))  # fmt: skip
                if not self._get(conn, timeout):
                    holder = _holder(conn, self.key)
                    raise LockTimeout(
                        f"another novadb {self.name} is running on {mask(self.engine.url)}"
                        f"{holder} (waited {timeout:g} s); let it finish or stop it, then retry"
                    )
        except BaseException:
            _close_quietly(conn)
            raise
        self.conn = conn
        self._thread = threading.Thread(target=self._keepalive, daemon=True, name="novadb-lock")
        self._thread.start()

    def _get(self, conn: Connection, timeout: float) -> bool:
        got = conn.execute(sa.select(sa.func.get_lock(self.key, timeout))).scalar()
        conn.commit()
        return got == 1

    # -- keeping it --------------------------------------------------------
    def _keepalive(self) -> None:
        while not self._done.wait(KEEPALIVE):
            with self._mutex:
                if self.conn is None or self.lost:
                    continue
                try:
                    self.conn.exec_driver_sql("SELECT 1")
                    self.conn.commit()
                except DBAPIError as exc:
                    self.lost = dberrors.message(exc)

    def verify(self) -> None:
        with self._mutex:
            if self.conn is not None and not self.lost:
                try:
                    mine = self.conn.execute(
                        sa.select(sa.func.is_used_lock(self.key) == sa.func.connection_id())
                    ).scalar()
                    self.conn.commit()
                    if mine:
                        return
                    self.lost = "the server no longer gives it to this session"
                except DBAPIError as exc:
                    self.lost = dberrors.message(exc)
            self._retake()

    def _retake(self) -> None:
        """Take the lock again on a new session, or stop: another run has it."""
        why = self.lost
        if self.conn is not None:
            _close_quietly(self.conn)
            self.conn = None
        try:
            conn = self.engine.connect()
        except DBAPIError:
            return  # the server is away: the batch's own reconnects deal with that
        try:
            if self._get(conn, 0):
                self.conn, self.lost = conn, None
                self.reacquired += 1
                self.progress(Event(
                    "lock", "warning",
                    f"the {self.name} lock's connection to {mask(self.engine.url)} was lost "
                    f"({why}); nobody else held the lock, so it was taken again",
                ))  # fmt: skip
                return
            holder = _holder(conn, self.key)
        except DBAPIError:
            _close_quietly(conn)
            return
        _close_quietly(conn)
        raise LockLost(
            f"the {self.name} lock on {mask(self.engine.url)} was lost ({why}) and another "
            f"run holds it now{holder}; this run stopped between batches so the two never "
            "run side by side. Nothing is lost: every batch is one transaction; run it again "
            "once the other run has finished"
        )

    # -- letting go --------------------------------------------------------
    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(5)

    def release(self) -> None:
        """Release the lock; a dead session has released it already (never raises)."""
        self.close()
        with self._mutex:
            if self.conn is None:
                return
            try:
                if not self.lost:
                    self.conn.execute(sa.select(sa.func.release_lock(self.key)))
                    self.conn.commit()
            except DBAPIError:
                pass  # the session died: the server released the lock with it
            finally:
                _close_quietly(self.conn)
                self.conn = None


def _close_quietly(conn: Connection) -> None:
    with suppress(DBAPIError):
        conn.close()


def _holder(conn: Connection, key: str) -> str:
    """`` (held by connection 42, nova@10.0.0.5)``, or empty when the server does not say."""
    try:
        holder = conn.execute(sa.select(sa.func.is_used_lock(key))).scalar()
        if holder is None:
            return ""
        plist = sa.table(
            "PROCESSLIST", sa.column("ID"), sa.column("USER"), sa.column("HOST"),
            schema="information_schema",
        )  # fmt: skip
        row = conn.execute(
            sa.select(plist.c.USER, plist.c.HOST).where(holder == plist.c.ID)
        ).first()
        conn.commit()
    except DBAPIError:
        return ""
    if row is None:  # another user's session, and we may not see the process list
        return f" (held by connection {holder})"
    return f" (held by connection {holder}, {row[0]}@{row[1]})"


@contextmanager
def database_lock(
    engine: Engine,
    name: str,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    progress: Progress = ignore,
) -> Iterator[HeldLock]:
    """Hold the advisory lock ``novadb.<name>`` on ``engine``'s database."""
    if is_sqlite(engine.url):
        with _file_lock(engine, name, timeout, progress) as held:
            yield held
        return
    held = _MysqlLock(engine, name, lock_key(name, engine.url.database or ""), progress)
    held.acquire(timeout)
    try:
        yield held
    finally:
        held.release()


@contextmanager
def _file_lock(
    engine: Engine, name: str, timeout: float, progress: Progress
) -> Iterator[HeldLock]:
    path = sqlite_path(engine.url)
    if path is None:  # in-memory: one process, nothing to share
        yield HeldLock()
        return
    lock_path = path.with_name(f"{path.name}.novadb-{name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        warned = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _file_holder(fd)
                if not warned:
                    warned = True
                    progress(Event(
                        "lock", "warning",
                        f"waiting up to {timeout:g} s for another novadb {name} on "
                        f"{mask(engine.url)} to finish{holder}",
                    ))  # fmt: skip
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"another novadb {name} is running on {mask(engine.url)}{holder} "
                        f"(waited {timeout:g} s); let it finish or stop it, then retry"
                    ) from None
                time.sleep(0.1)
        # Say who holds it, for the next run that has to wait.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield HeldLock()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _file_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (held by process {pid})" if pid.isdigit() else ""
