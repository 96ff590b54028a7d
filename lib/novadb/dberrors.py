"""What a database error means for a batch: retry it, shrink it, check it, or stop.

Batched writers (archive, purge, online migrations) share one classification,
so a Galera certification failure or a MySQL deadlock is retried everywhere
the same way, a lost server is reconnected to everywhere the same way, and a
"transaction too big" error always halves the batch.
"""

from __future__ import annotations

import re

from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

# Deadlock, lock wait timeout, "record changed since last read" (Galera: 1020),
# Group Replication certification failure (3101): the batch can simply run again.
# (Galera reports its certification failures as 1213, a deadlock.)
RETRY_ERRNOS = frozenset({1213, 1205, 1020, 3101})
# "Transaction too big": binlog cache (1197), Galera's wsrep_max_ws_rows (1180
# "wsrep_max_ws_rows exceeded", raised by the statement itself), Group
# Replication (3100).  1105 is MariaDB's generic "unknown error": only its
# write-set form ("Maximum writeset size exceeded") means too big.
TOO_BIG_ERRNOS = frozenset({1180, 1197, 3100})
_TOO_BIG_1105 = re.compile(r"write ?set", re.IGNORECASE)
# The connection died (gone away, lost during a query, killed, closed for
# inactivity, out of sync): the batch may or may not have committed.
LOST_ERRNOS = frozenset({2006, 2013, 2014, 2055, 1927, 4031})
# The server is not there right now (refused, no route, unknown host, or a
# Galera node that left the primary component and refuses queries: 1047).
GONE_ERRNOS = frozenset({2002, 2003, 2005, 1047, 1053})
DUPLICATE_ERRNO = 1062
FK_ERRNOS = frozenset({1451, 1452})
# Table/column/database/global privilege refused.
PRIVILEGE_ERRNOS = frozenset({1142, 1143, 1044, 1227, 1370})
# A value the shadow table cannot hold: the shadow's columns differ from the
# live table's (no default for an extra column, too short, NOT NULL, charset).
SHADOW_VALUE_ERRNOS = frozenset({1364, 1406, 1048, 1366, 1264, 1265, 1292})


def errno(exc: BaseException) -> int | None:
    """The MySQL error number behind a SQLAlchemy error, if any."""
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def message(exc: BaseException) -> str:
    """The server's message of a database error, one line, without SQL or parameters."""
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        text = f"({args[0]}) {args[1]}"
    else:
        text = str(orig if orig is not None else exc)
    return (text.splitlines() or [""])[0].strip() or type(exc).__name__


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
    if not isinstance(exc, DBAPIError):
        return False
    number = errno(exc)
    if number == 1105:
        return bool(_TOO_BIG_1105.search(message(exc)))
    return number in TOO_BIG_ERRNOS


def is_lost_connection(exc: BaseException) -> bool:
    """The connection died, or the server is gone: reconnect, and check what committed.

    Covers the driver's forms too: PyMySQL's ``InterfaceError(0, '')`` when a
    connection that died is used again, and broken pipes (2006).
    """
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    number = errno(exc)
    if number in LOST_ERRNOS or number in GONE_ERRNOS:
        return True
    return isinstance(exc, InterfaceError) and number == 0


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


def is_shadow_value(exc: BaseException) -> bool:
    """A copied value does not fit the target table (its columns differ from the source's)."""
    if not isinstance(exc, DBAPIError):
        return False
    if errno(exc) in SHADOW_VALUE_ERRNOS:
        return True
    text = _sqlite_message(exc)
    return "not null constraint failed" in text


_DENIED = re.compile(
    r"(?P<command>[A-Z ,]+?) command denied to user (?P<user>'[^']*'@'[^']*')"
    r"(?: for (?:table|column) [`']?(?:[^`'.]*[`']?\.[`']?)?(?P<table>[^`']+)[`']?)?",
)
_DENIED_DB = re.compile(
    r"Access denied for user (?P<user>'[^']*'@'[^']*') to database '(?P<db>[^']*)'"
)


def privilege_problem(exc: BaseException) -> str | None:
    """``user 'nova'@'%' lacks INSERT on shadow_instances`` for a refused privilege, else None."""
    if not isinstance(exc, DBAPIError) or errno(exc) not in PRIVILEGE_ERRNOS:
        return None
    text = message(exc)
    found = _DENIED.search(text)
    if found:
        where = f" on {found['table']}" if found["table"] else ""
        return f"user {found['user']} lacks {found['command'].strip()}{where}"
    found = _DENIED_DB.search(text)
    if found:
        return f"user {found['user']} lacks access to database {found['db']}"
    return f"the database user lacks a privilege: {text}"
