"""Column types whose rendering differs between MySQL and SQLite.

Nova's schema uses a few types that are not the same on both dialects; the
migrations name them here once so each revision reads like Nova's own.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine


def MediumText() -> TypeEngine[str]:  # noqa: N802 - reads like a type in revisions
    """TEXT, but MEDIUMTEXT on MySQL (Nova's 16 MiB blobs: user_data, spec, ...)."""
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql")


def BigIntegerPK() -> TypeEngine[int]:  # noqa: N802
    """BIGINT, but INTEGER on SQLite so that it autoincrements as a rowid alias."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def MySQLString(length: int, *, binary: bool = False) -> TypeEngine[str]:  # noqa: N802
    """VARCHAR whose MySQL charset is utf8 even inside a latin1 table.

    Nova's placement-era tables are latin1 for compactness but keep names in
    utf8 (case-sensitive ``utf8_bin`` in the API DB copy).
    """
    collation = "utf8_bin" if binary else None
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8", collation=collation), "mysql"
    )
