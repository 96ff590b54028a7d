"""The body shared by the three ``migrations/*/env.py`` files.

novadb always runs migrations on a connection it opened itself (passed in
``config.attributes["connection"]``), so locks, session settings and masking
stay in one place.  Offline mode (``sync --sql``) renders DDL for the URL's
dialect without connecting.  ``render_as_batch`` lets SQLite emulate ALTER.
"""

from __future__ import annotations

from typing import Any

from alembic import context


def run() -> None:
    """Run the migrations of the environment whose env.py calls this."""
    config = context.config
    options: dict[str, Any] = {
        "render_as_batch": True,
        "transaction_per_migration": True,
        "on_version_apply": config.attributes.get("on_version_apply"),
    }
    if context.is_offline_mode():
        context.configure(
            url=config.attributes["offline_url"],
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
            **options,
        )
    else:
        context.configure(connection=config.attributes["connection"], **options)
    with context.begin_transaction():
        context.run_migrations()
