"""Alembic environment; novadb drives it (see novadb.alembic_env)."""

from novadb.alembic_env import run

run()
