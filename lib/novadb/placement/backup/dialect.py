"""What backing up and restoring Placement does differently on MySQL/MariaDB and SQLite.

A backup taken from one must restore onto the other with the same values and
ids, and the two disagree on how to read one consistent snapshot, how to read
a value without losing precision, which values a column can hold exactly,
and how to insert rows with their original ids in any order.  Those
differences sit here, in one class per dialect, with the reading of rows
that depends on them, so the backup and restore code reads the same for both.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from novadb.connections import allow_zero_ids, mask, restore_sql_mode
from novadb.errors import BadInput
from novadb.placement.backup.file import CHUNK_ROWS, Row, encode

Fix = Callable[[Any], Any]


def _single(value: float) -> float:
    """The shortest decimal that a 32-bit float holds as the same value as ``value``.

    MySQL's FLOAT is 32 bits: Placement's ratio 0.9 is stored as 0.89999997...
    Writing the shortest decimal keeps 0.9 when restored into SQLite's 64-bit
    REAL, and MySQL stores it back as the very same 32 bits.
    """
    try:
        stored = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:  # too big for FLOAT: let the database refuse it
        return value
    if not math.isfinite(stored):
        return stored
    for digits in range(1, 10):  # 9 significant digits always round-trip a float32
        candidate = float(f"{stored:.{digits}g}")
        try:
            if struct.unpack("<f", struct.pack("<f", candidate))[0] == stored:
                return candidate
        except OverflowError:
            continue
    return stored


def _whole_seconds(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=0)


class Dialect:
    """How SQLite is read and loaded; :class:`_MySQL` overrides what MySQL does otherwise."""

    @contextmanager
    def snapshot(self, conn: Connection) -> Iterator[None]:
        """Hold one read transaction, so every table comes from the same moment."""
        # pysqlite opens transactions only before writes; BEGIN makes the reads
        # that follow share one snapshot (writers wait for it to end).
        conn.execute(sa.text("BEGIN"))
        try:
            yield
        finally:
            conn.rollback()

    def rows(
        self,
        conn: Connection,
        table: sa.Table,
        columns: tuple[tuple[str, str], ...],
        key: tuple[str, ...],
    ) -> Iterator[list[Row]]:
        """The table's rows in ``key`` order, encoded, CHUNK_ROWS at a time."""
        cols = [table.c[name] for name, _kind in columns]
        kinds = [kind for _name, kind in columns]
        fixes = [self.fix(c) for c in cols]
        stmt = sa.select(*(self.read(c) for c in cols)).order_by(*(table.c[k] for k in key))
        result = conn.execute(stmt.execution_options(yield_per=CHUNK_ROWS))
        for part in result.partitions():
            yield [
                [
                    encode(kind, fix(v) if fix is not None and v is not None else v)
                    for kind, fix, v in zip(kinds, fixes, row, strict=True)
                ]
                for row in part
            ]

    def read(self, column: sa.Column[Any]) -> sa.ColumnElement[Any]:
        """The expression that reads ``column`` without losing precision."""
        return column

    def fix(self, column: sa.Column[Any]) -> Fix | None:
        """What the column makes of a value it cannot hold exactly; None if it holds all."""
        return None

    @contextmanager
    def loading(self, conn: Connection) -> Iterator[None]:
        """Session settings for inserting rows exactly as they were, in any order."""
        # A provider's parent may have a higher id than the provider itself, and
        # a SQLite backup may hold rows that its foreign keys would refuse.
        conn.rollback()
        enforced = conn.execute(sa.text("PRAGMA foreign_keys")).scalar()
        conn.execute(sa.text("PRAGMA foreign_keys = OFF"))
        try:
            yield
        finally:
            conn.rollback()
            if enforced:
                conn.execute(sa.text("PRAGMA foreign_keys = ON"))


class _MySQL(Dialect):
    @contextmanager
    def snapshot(self, conn: Connection) -> Iterator[None]:
        conn.execution_options(isolation_level="REPEATABLE READ")
        conn.execute(sa.text("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"))
        try:
            yield
        finally:
            conn.rollback()

    def read(self, column: sa.Column[Any]) -> sa.ColumnElement[Any]:
        if _is_single(column):
            # The server prints a FLOAT with 6 digits (1.2345678 comes back as
            # 1.23457); as a double it comes back exact.
            return sa.type_coerce(column + sa.literal_column("0E0"), sa.Double()).label(
                column.name
            )
        return column

    def fix(self, column: sa.Column[Any]) -> Fix | None:
        if _is_single(column):
            return _single
        if isinstance(column.type, sa.DateTime) and not getattr(column.type, "fsp", None):
            # DATETIME drops fractions of a second (MariaDB truncates, MySQL
            # rounds): truncate here so both store the same.
            return _whole_seconds
        return None

    @contextmanager
    def loading(self, conn: Connection) -> Iterator[None]:
        conn.rollback()
        mode = allow_zero_ids(conn)  # VCPU's id 0 stays 0
        conn.execute(sa.text("SET SESSION foreign_key_checks = 0"))
        try:
            yield
        finally:
            try:
                conn.rollback()
                conn.execute(sa.text("SET SESSION foreign_key_checks = 1"))
                restore_sql_mode(conn, mode)
                conn.rollback()
            except DBAPIError:
                # Never hand a session without foreign key checks back to the pool.
                conn.invalidate()


def _is_single(column: sa.Column[Any]) -> bool:
    """A MySQL FLOAT of 32 bits (FLOAT(p) with p > 24 is a DOUBLE)."""
    return isinstance(column.type, mysql.FLOAT) and (column.type.precision or 0) <= 24


def dialect_of(engine: Engine) -> Dialect:
    """The :class:`Dialect` for ``engine``; BadInput for a database novadb cannot back up."""
    if engine.dialect.name == "mysql":
        return _MySQL()
    if engine.dialect.name == "sqlite":
        return Dialect()
    raise BadInput(f"{mask(engine.url)}: novadb backs up MySQL/MariaDB and SQLite databases only")
