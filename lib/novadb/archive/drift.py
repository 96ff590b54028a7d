"""Shadow tables that would make archive's copy fail or lose data, found before anything moves.

Archive copies every live column into the shadow twin with ``INSERT ...
SELECT``.  That fails, or loses data, when the shadow table:

* lacks a live column (the value would be dropped);
* has an extra ``NOT NULL`` column without a default (MySQL 1364);
* has a column too narrow for the live one: a shorter ``VARCHAR`` (1406), a
  smaller integer or text type, another type altogether, or a character set
  that cannot hold the live one's characters (1366);
* makes ``NOT NULL`` a column whose live rows hold NULL (1048).

A difference that cannot fail the copy (a wider column, another collation, a
default) is not one.  Nova's own schema has a shadow column that is ``NOT
NULL`` where the live one is nullable (``pci_devices.deleted``), so that
rule looks at the data.  SQLite does not enforce types or lengths; there only
columns and nullability count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class Column:
    """What the server says about one column."""

    name: str
    type: str  # the DDL type: varchar(255), int(11), text ...
    nullable: bool
    default: str | None
    charset: str | None = None
    generated: bool = False  # AUTO_INCREMENT or a generated column: fills itself


@dataclass(frozen=True)
class Problem:
    """A shadow column that would make the copy fail, and the statement that fixes it."""

    table: str  # the live table
    column: str
    what: str  # a phrase: "lacks column(s) x", "is NOT NULL without a default", ...
    fix: str

    @property
    def lacks(self) -> bool:
        """The shadow table has no such column at all."""
        return self.what == "lacks"


def columns(conn: Connection, tables: Iterable[str]) -> dict[str, dict[str, Column]]:
    """The columns of ``tables`` (present ones), in column order, from the catalogue."""
    names = list(tables)
    if not names:
        return {}
    out: dict[str, dict[str, Column]] = {}
    if conn.dialect.name == "mysql":
        info = sa.table(
            "COLUMNS",
            *(sa.column(c) for c in (
                "TABLE_SCHEMA", "TABLE_NAME", "COLUMN_NAME", "COLUMN_TYPE", "IS_NULLABLE",
                "COLUMN_DEFAULT", "CHARACTER_SET_NAME", "EXTRA", "ORDINAL_POSITION",
            )),
            schema="information_schema",
        )  # fmt: skip
        rows = conn.execute(
            sa.select(
                info.c.TABLE_NAME, info.c.COLUMN_NAME, info.c.COLUMN_TYPE, info.c.IS_NULLABLE,
                info.c.COLUMN_DEFAULT, info.c.CHARACTER_SET_NAME, info.c.EXTRA,
            )
            .where(sa.func.database() == info.c.TABLE_SCHEMA, info.c.TABLE_NAME.in_(names))
            .order_by(info.c.TABLE_NAME, info.c.ORDINAL_POSITION)
        )  # fmt: skip
        for table, name, kind, nullable, default, charset, extra in rows:
            generated = any(w in str(extra or "").lower() for w in ("auto_increment", "generated"))
            # MariaDB says the default NULL as the text "NULL".
            default = None if default is None or str(default) == "NULL" else str(default)
            out.setdefault(str(table), {})[str(name)] = Column(
                str(name), str(kind).lower(), nullable == "YES", default,
                str(charset) if charset else None, generated,
            )  # fmt: skip
        return out
    for table in names:
        rows = conn.exec_driver_sql(
            'SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?)', (table,)
        ).all()
        for name, kind, notnull, default, pk in rows:
            integer_key = bool(pk) and str(kind).upper() == "INTEGER"  # the rowid
            out.setdefault(table, {})[str(name)] = Column(
                str(name), str(kind).lower(), not notnull, default, None, integer_key
            )
    return out


_SIZED = re.compile(r"^(?P<base>[a-z]+)(?:\((?P<size>[0-9, ]+)\))?(?P<rest>.*)$")
_INT_RANK = {"tinyint": 1, "smallint": 2, "mediumint": 3, "int": 4, "integer": 4, "bigint": 5}
_TEXT_RANK = {"tinytext": 1, "text": 2, "mediumtext": 3, "longtext": 4}
_BLOB_RANK = {"tinyblob": 1, "blob": 2, "mediumblob": 3, "longblob": 4}
_CHARS = {"char", "varchar", "binary", "varbinary"}


def _holds(shadow: str, live: str) -> bool:
    """Whether a MySQL column of type ``shadow`` holds every value of type ``live``."""
    if shadow == live:
        return True
    s, v = _SIZED.match(shadow), _SIZED.match(live)
    if s is None or v is None:
        return False
    sb, vb = s["base"], v["base"]
    if s["rest"].strip() != v["rest"].strip():  # unsigned, zerofill
        return False
    if sb in _INT_RANK and vb in _INT_RANK:  # display widths mean nothing
        return _INT_RANK[sb] >= _INT_RANK[vb]
    for rank in (_TEXT_RANK, _BLOB_RANK):
        if sb in rank and vb in rank:
            return rank[sb] >= rank[vb]
    if (
        sb in _CHARS
        and vb in _CHARS
        and (sb in ("char", "varchar")) == (vb in ("char", "varchar"))
    ):
        return int(s["size"] or 1) >= int(v["size"] or 1)
    return False


def shadow_problems(conn: Connection, tables: Iterable[str]) -> dict[str, list[Problem]]:
    """Per live table (with a shadow twin), the shadow columns that would fail archive's copy."""
    names = list(tables)
    found = columns(conn, [*names, *(f"shadow_{t}" for t in names)])
    mysql = conn.dialect.name == "mysql"
    out: dict[str, list[Problem]] = {}
    for name in names:
        live, shadow = found.get(name), found.get(f"shadow_{name}")
        if live is None or shadow is None:
            continue
        problems = [
            *_column_problems(conn, name, live, shadow, mysql),
            *_extra_problems(name, live, shadow),
        ]
        if problems:
            out[name] = problems
    return out


def _column_problems(
    conn: Connection, name: str, live: dict[str, Column], shadow: dict[str, Column], mysql: bool
) -> list[Problem]:
    out = []
    target = f"shadow_{name}"
    for column in live.values():
        twin = shadow.get(column.name)
        if twin is None:
            out.append(Problem(
                name, column.name, "lacks",
                f"ALTER TABLE {target} ADD COLUMN {column.name} {column.type}",
            ))  # fmt: skip
            continue
        null = "NULL" if twin.nullable else "NOT NULL"
        if mysql and not _holds(twin.type, column.type):
            out.append(Problem(
                name, column.name,
                f"{target}.{column.name} is {twin.type}, which cannot hold every value of "
                f"{name}.{column.name} ({column.type})",
                f"ALTER TABLE {target} MODIFY {column.name} {column.type} {null}",
            ))  # fmt: skip
        elif (
            mysql
            and column.charset is not None
            and twin.charset is not None
            and twin.charset != column.charset
            and twin.charset != "utf8mb4"
        ):
            out.append(Problem(
                name, column.name,
                f"{target}.{column.name} is in {twin.charset}, which cannot hold every "
                f"{column.charset} character of {name}",
                f"ALTER TABLE {target} MODIFY {column.name} {twin.type} CHARACTER SET "
                f"{column.charset} {null}",
            ))  # fmt: skip
        if column.nullable and not twin.nullable and _has_null(conn, name, column.name):
            out.append(Problem(
                name, column.name,
                f"{target}.{column.name} is NOT NULL but {name} rows hold NULL in it",
                f"ALTER TABLE {target} MODIFY {column.name} {twin.type} NULL",
            ))  # fmt: skip
    return out


def _extra_problems(
    name: str, live: dict[str, Column], shadow: dict[str, Column]
) -> list[Problem]:
    target = f"shadow_{name}"
    return [
        Problem(
            name,
            column.name,
            f"{target}.{column.name} is NOT NULL without a default and {name} has no such column",
            f"ALTER TABLE {target} MODIFY {column.name} {column.type} NULL",
        )  # fmt: skip
        for column in shadow.values()
        if column.name not in live
        and not column.nullable
        and column.default is None
        and not column.generated
    ]


def _has_null(conn: Connection, table: str, column: str) -> bool:
    t = sa.table(table, sa.column(column))
    return (
        conn.execute(sa.select(sa.literal(1)).where(t.c[column].is_(None)).limit(1)).first()
        is not None
    )


def create_shadow_fix(name: str, mysql: bool) -> str:
    """The statement(s) that recreate a missing shadow table empty, as Nova's has it."""
    fix = f"CREATE TABLE shadow_{name} AS SELECT * FROM {name} WHERE 1 = 0"
    if mysql:
        fix += f"; ALTER TABLE shadow_{name} ADD PRIMARY KEY (id)"
    return fix


def describe(problems: list[Problem]) -> str:
    """One phrase per problem, missing columns grouped per table, as archive's message has it."""
    parts: list[str] = []
    lacking: dict[str, list[str]] = {}
    for p in problems:
        if p.lacks:
            lacking.setdefault(p.table, []).append(p.column)
    for table, cols in lacking.items():
        parts.append(f"shadow_{table} lacks column(s) {', '.join(cols)} that {table} has")
    parts += [p.what for p in problems if not p.lacks]
    return "; ".join(parts)
