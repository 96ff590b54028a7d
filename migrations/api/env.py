"""Alembic environment; novadb drives it (see novadb.schema.alembic_env)."""

from novadb.schema.alembic_env import run

run()
