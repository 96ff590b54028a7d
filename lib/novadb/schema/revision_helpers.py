"""Small helpers the revision scripts use, online and offline alike."""

from __future__ import annotations

from alembic import context, op


def dialect_name() -> str:
    """``mysql`` or ``sqlite`` (works in ``--sql`` mode too)."""
    return op.get_context().dialect.name


def is_offline() -> bool:
    """True while rendering DDL for ``sync --sql`` (no data can be read)."""
    return context.is_offline_mode()


def database_name() -> str:
    """The schema name of the database being migrated (MySQL)."""
    name = context.config.attributes.get("database_name")
    if not name:
        raise RuntimeError("database_name was not passed to the migration environment")
    return str(name)
