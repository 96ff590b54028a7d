"""What a database error means for a batch: retry it, shrink it, check it, or stop.

Batched writers (archive, purge, online migrations) share one classification,
so a Galera certification failure or a MySQL deadlock is retried everywhere
the same way, and a "transaction too big" error always halves the batch.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

# Deadlock, lock wait timeout, "record changed since last read" (Galera: 1020),
# Group Replication certification failure (3101): the batch can simply run again.
RETRY_ERRNOS = frozenset({1213, 1205, 1020, 3101})
# "Transaction too big" in its several forms: binlog cache (1180, 1197), Galera
# write-set limits (1105 "Maximum writeset size exceeded"), Group Replication (3100).
TOO_BIG_ERRNOS = frozenset({1180, 1197, 1105, 3100})
# The connection died; the batch may or may not have committed.
LOST_ERRNOS = frozenset({2006, 2013, 2055})
DUPLICATE_ERRNO = 1062
FK_ERRNOS = frozenset({1451, 1452})


def errno(exc: BaseException) -> int | None:
    """The MySQL error number behind a SQLAlchemy error, if any."""
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def _sqlite_message(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).lower()


def is_retryable(exc: BaseException) -> bool:
    """A transient conflict: deadlock, lock timeout, certification failure, SQLite busy."""
    if not isinstance(exc, DBAPIError):
        return False
    if errno(exc) in RETRY_ERRNOS:
        return True
    return isinstance(exc, OperationalError) and "database is locked" in _sqlite_message(exc)


def is_too_big(exc: BaseException) -> bool:
    """The server refused the transaction's size; a smaller batch will pass."""
    return isinstance(exc, DBAPIError) and errno(exc) in TOO_BIG_ERRNOS


def is_lost_connection(exc: BaseException) -> bool:
    """The connection died mid-batch: whether the batch committed must be checked."""
    if not isinstance(exc, DBAPIError):
        return False
    return errno(exc) in LOST_ERRNOS or bool(exc.connection_invalidated)


def is_duplicate(exc: BaseException) -> bool:
    """A unique key (a shadow table's primary key) already holds the row's id."""
    if not isinstance(exc, IntegrityError):
        return False
    return errno(exc) == DUPLICATE_ERRNO or "unique constraint failed" in _sqlite_message(exc)


def is_foreign_key(exc: BaseException) -> bool:
    """A row we would delete is still referenced from a table we do not move."""
    if not isinstance(exc, IntegrityError):
        return False
    return errno(exc) in FK_ERRNOS or "foreign key constraint failed" in _sqlite_message(exc)
