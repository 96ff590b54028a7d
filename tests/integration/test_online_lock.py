"""Two online-migrate runs never interleave: the second waits for the lock, then fails clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from novadb.config import load_settings
from novadb.connections import create_engine
from novadb.errors import LockTimeout
from novadb.locking import database_lock
from novadb.online.runner import online_migrate
from novadb.schema.sync import sync


def test_second_run_fails_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    settings = load_settings(
        database=f"sqlite:///{tmp_path}/cell.sqlite",
        api_database=f"sqlite:///{tmp_path}/api.sqlite",
        placement_database=f"sqlite:///{tmp_path}/placement.sqlite",
    )
    sync(settings)
    main = create_engine(settings.url("main"))
    with main.begin() as conn:
        conn.execute(sa.text("INSERT INTO migrations (id, deleted, uuid) VALUES (1, 0, NULL)"))
    api = create_engine(settings.url("api"))
    with database_lock(api, "online-migrate"), pytest.raises(LockTimeout) as raised:
        online_migrate(settings, lock_timeout=0.3)
    assert "another novadb online-migrate is running" in str(raised.value)
    with main.connect() as conn:  # nothing was migrated while the lock was held
        assert conn.execute(sa.text("SELECT uuid FROM migrations")).scalar() is None
    result = online_migrate(settings)
    assert result.exit_code == 0
    with main.connect() as conn:
        assert conn.execute(sa.text("SELECT uuid FROM migrations")).scalar() is not None
    main.dispose()
    api.dispose()
