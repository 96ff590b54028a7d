"""What ``check`` asks MySQL and SQLite differently: read-only sessions, id counters, engines.

Everything dialect-specific of ``check`` sits here, so the checks themselves
read the same on both servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine


def _is_mysql8(conn: Connection) -> bool:
    version = conn.dialect.server_version_info or ()
    return not getattr(conn.dialect, "is_mariadb", False) and tuple(version[:1]) >= (8,)


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """One connection whose every statement runs in a read-only transaction.

    MySQL refuses writes in a ``READ ONLY`` session (and reads one consistent
    snapshot per transaction); SQLite refuses them under ``query_only``.  A
    bug in a check can therefore never change an operator's data.  MySQL 8
    caches ``information_schema.TABLES`` statistics, AUTO_INCREMENT among
    them, for a day by default: the cache is turned off for the session.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "mysql":
            conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
            if _is_mysql8(conn):
                conn.exec_driver_sql("SET SESSION information_schema_stats_expiry = 0")
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = ON")
        try:
            yield conn
        finally:
            conn.rollback()
            # The pool may hand this connection out again: leave it as it was.
            if conn.dialect.name == "mysql":
                conn.exec_driver_sql("SET SESSION TRANSACTION READ WRITE")
            elif conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA query_only = OFF")


def next_ids(conn: Connection, tables: list[str]) -> dict[str, int]:
    """The id each table hands out next.

    MySQL: ``AUTO_INCREMENT`` from ``information_schema`` (one query).
    SQLite: the largest id ever used plus one, from ``sqlite_sequence`` for
    ``AUTOINCREMENT`` tables, else the live table's ``MAX(id)`` (a rowid
    table reuses ids above its current maximum, as InnoDB did after a
    restart before it persisted the counter).
    """
    if not tables:
        return {}
    if conn.dialect.name == "mysql":
        info = sa.table(
            "TABLES",
            sa.column("TABLE_SCHEMA"),
            sa.column("TABLE_NAME"),
            sa.column("AUTO_INCREMENT"),
            schema="information_schema",
        )
        query = sa.select(info.c.TABLE_NAME, info.c.AUTO_INCREMENT).where(
            sa.func.database() == info.c.TABLE_SCHEMA, info.c.TABLE_NAME.in_(tables)
        )
        return {str(name): int(value) for name, value in conn.execute(query) if value is not None}
    sequences: dict[str, int] = {}
    exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
    if conn.exec_driver_sql(exists).first() is not None:
        rows = conn.exec_driver_sql("SELECT name, seq FROM sqlite_sequence")
        sequences = {str(name): int(seq or 0) for name, seq in rows}
    out: dict[str, int] = {}
    for name in tables:
        table = sa.table(name, sa.column("id"))
        highest = int(conn.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0)
        out[name] = max(highest, sequences.get(name, 0)) + 1
    return out


@dataclass(frozen=True)
class StorageProblems:
    """MySQL tables on an engine other than InnoDB, and tables without a primary key."""

    engines: dict[str, str]
    no_primary_key: tuple[str, ...]
    with_id: frozenset[str]


def storage_problems(conn: Connection) -> StorageProblems:
    """Non-InnoDB tables and tables without a primary key (MySQL; nothing on SQLite)."""
    if conn.dialect.name != "mysql":
        return StorageProblems({}, (), frozenset())
    engines = {
        str(name): str(engine)
        for name, engine in conn.exec_driver_sql(
            "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' "
            "AND ENGINE <> 'InnoDB' ORDER BY TABLE_NAME"
        )
    }
    tables = [
        str(r[0])
        for r in conn.exec_driver_sql(
            "SELECT TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME"
        )
    ]
    keyed = {
        str(r[0])
        for r in conn.exec_driver_sql(
            "SELECT TABLE_NAME FROM information_schema.TABLE_CONSTRAINTS "
            "WHERE TABLE_SCHEMA = DATABASE() AND CONSTRAINT_TYPE = 'PRIMARY KEY'"
        )
    }
    no_pk = tuple(t for t in tables if t not in keyed)
    with_id: frozenset[str] = frozenset()
    if no_pk:
        with_id = frozenset(
            str(r[0])
            for r in conn.execute(
                sa.text(
                    "SELECT TABLE_NAME FROM information_schema.COLUMNS "
                    "WHERE TABLE_SCHEMA = DATABASE() AND COLUMN_NAME = 'id' "
                    "AND TABLE_NAME IN :names"
                ).bindparams(sa.bindparam("names", list(no_pk), expanding=True))
            )
        )
    return StorageProblems(engines, no_pk, with_id)


Catalogue = dict[str, dict[str, str]]
"""Table -> column -> the column's type as DDL, in column order."""


def catalogue(conn: Connection) -> Catalogue:
    """Every table's columns and their DDL types, in one query.

    MySQL: ``information_schema.COLUMNS`` (the type with its collation, so a
    shadow column in another character set counts as different).  SQLite:
    ``pragma_table_info`` over ``sqlite_master``.  Either way one round trip
    instead of one ``SHOW CREATE TABLE`` per table.
    """
    if conn.dialect.name == "mysql":
        # (Joining information_schema.TABLES would make the server open every table.)
        views = {
            str(r[0])
            for r in conn.exec_driver_sql(
                "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE()"
            )
        }
        rows = conn.exec_driver_sql(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, COLLATION_NAME "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            "ORDER BY TABLE_NAME, ORDINAL_POSITION"
        )
        types = (
            (table, column, f"{kind} COLLATE {collation}" if collation else str(kind))
            for table, column, kind, collation in rows
            if table not in views
        )
    else:
        types = conn.exec_driver_sql(
            "SELECT m.name, p.name, p.type FROM sqlite_master AS m "
            "JOIN pragma_table_info(m.name) AS p "
            "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid"
        )
    out: Catalogue = {}
    for table, column, kind in types:
        out.setdefault(str(table), {})[str(column)] = str(kind)
    return out


def compares_types(conn: Connection) -> bool:
    """Whether a column type mismatch can fail an INSERT (not under SQLite's type affinity)."""
    return conn.dialect.name == "mysql"
