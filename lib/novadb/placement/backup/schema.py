"""Which Placement schema a backup and a restore work with, and whose database it is.

A backup holds rows, not DDL: a restore recreates the tables with novadb's
own Placement migrations at the backup's revision.  So a database is backed
up only if it matches exactly what those migrations create, and a restore
drops tables only in a database that holds nothing but Placement's, never
in the Nova API or a cell database that a wrong URL points at.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection, Engine

from novadb.errors import SchemaError
from novadb.placement.backup.file import KINDS, PLACEMENT_TABLES, VERSION_TABLE
from novadb.schema import revisions


def placement_tables(bind: Engine | Connection) -> tuple[str, ...]:
    """Placement's tables present in ``bind``'s database, parents first."""
    present = set(sa.inspect(bind).get_table_names())
    return tuple(name for name in PLACEMENT_TABLES if name in present)


def column_kind(table: str, column: sa.Column[Any]) -> str:
    """The kind a backup gives ``column``'s values; SchemaError if it has none."""
    try:
        python_type: type | None = column.type.python_type
    except NotImplementedError:
        python_type = None
    kind = KINDS.get(python_type) if python_type is not None else None
    if kind is None:
        raise SchemaError(
            f"column {table}.{column.name} has type {column.type}, which is not in "
            "Placement's schema; the database has drifted; nothing was written"
        )
    return kind


def migrate(conn: Connection, revision: str, database_name: str) -> None:
    """Create Placement's schema up to ``revision`` with novadb's own migrations."""
    config = revisions.alembic_config("placement")
    config.attributes.update(connection=conn, database_name=database_name)
    conn.commit()
    command.upgrade(config, revision)
    conn.commit()


@cache
def schema_at(revision: str) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """(table, ((column, kind), ...)) of Placement at ``revision``, parents first.

    Found by running the migrations on an in-memory SQLite database, so it can
    never disagree with what a restore will create.
    """
    engine = sa.create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            migrate(conn, revision, "main")
            meta = sa.MetaData()
            meta.reflect(conn)
    finally:
        engine.dispose()
    names = [VERSION_TABLE, *(t for t in PLACEMENT_TABLES if t in meta.tables)]
    return tuple(
        (name, tuple((c.name, column_kind(name, c)) for c in meta.tables[name].columns))
        for name in names
    )


def drift(
    expected: dict[str, set[tuple[str, str]]], actual: dict[str, set[tuple[str, str]]]
) -> str:
    """How ``actual`` tables/columns differ from ``expected``; empty when they agree."""
    problems = [f"{name} is missing" for name in expected if name not in actual]
    problems += [f"{name} is not expected" for name in actual if name not in expected]
    for name in expected.keys() & actual.keys():
        missing = sorted(f"{c}:{k}" for c, k in expected[name] - actual[name])
        extra = sorted(f"{c}:{k}" for c, k in actual[name] - expected[name])
        if missing or extra:
            problems.append(f"{name} lacks [{', '.join(missing)}], has [{', '.join(extra)}]")
    return "; ".join(sorted(problems))


def _stamped(conn: Connection) -> list[str]:
    """The revisions ``alembic_version`` holds."""
    meta = sa.MetaData()
    meta.reflect(conn, only=[VERSION_TABLE])
    return [str(v) for v in conn.execute(sa.select(meta.tables[VERSION_TABLE].c[0])).scalars()]


def check_source(conn: Connection, where: str) -> tuple[str, list[sa.Table], list[str]]:
    """The revision and tables of a database to back up, checked to be Placement's schema.

    Also returns the tables that are not Placement's, which a backup leaves out.
    """
    names = set(sa.inspect(conn).get_table_names())
    if VERSION_TABLE not in names:
        raise SchemaError(
            f"{where} has no alembic_version table, so it is not a Placement database "
            "novadb can back up; check the URL or run `novadb sync --database placement`"
        )
    stamped = _stamped(conn)
    if len(stamped) != 1 or stamped[0] not in revisions.chain("placement"):
        raise SchemaError(
            f"{where} is stamped {', '.join(stamped) or 'with no revision'}, which is not a "
            "Placement revision novadb knows (is it the Nova API database?); check "
            "[placement_database]/connection; nothing was written"
        )
    revision = stamped[0]
    schema = dict(schema_at(revision))
    present = [name for name in schema if name in names]
    meta = sa.MetaData()
    meta.reflect(conn, only=present)
    actual = {
        name: {(c.name, column_kind(name, c)) for c in meta.tables[name].columns}
        for name in present
    }
    problems = drift({name: set(columns) for name, columns in schema.items()}, actual)
    if problems:
        raise SchemaError(
            f"{where} differs from Placement's schema at {revision}: {problems}; repair the "
            "schema before backing it up; nothing was written"
        )
    return revision, [meta.tables[name] for name in schema], sorted(names - set(schema))


def check_target(conn: Connection, where: str) -> set[str]:
    """Refuse a database that holds anything but Placement; return its tables."""
    names = set(sa.inspect(conn).get_table_names())
    foreign = sorted(names - {VERSION_TABLE, *PLACEMENT_TABLES})
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise SchemaError(
            f"{where} holds tables that are not Placement's ({shown}); is it the Nova API "
            "or a cell database? novadb replaces tables only in Placement's own database "
            "([placement_database]/connection); nothing was changed"
        )
    if VERSION_TABLE in names:
        unknown = [v for v in _stamped(conn) if v not in revisions.chain("placement")]
        if unknown:
            raise SchemaError(
                f"{where} is stamped {', '.join(unknown)}, which is not a Placement revision; "
                "novadb replaces tables only in Placement's own database; nothing was changed"
            )
    conn.rollback()
    return names
