"""Small pieces the online migrations share: Nova's timestamps, soft delete, batching."""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from novadb.online.base import Context, Func, Outcome

# Nova's marker for "no real owner": the virtual-interface migration's fake
# instance and its marker row use it, and populate_user_id skips mappings
# whose project is it.
FAKE_UUID = "00000000-0000-0000-0000-000000000000"

# Rows one call touches at most, whatever the caller's limit: keeps each
# transaction short and each IN list / CASE well under SQLite's bind limit
# when --max-count asks for a hundred thousand rows at once.
CHUNK = 1000


def utcnow() -> datetime:
    """Naive UTC, as oslo's ``timeutils.utcnow()`` writes to Nova's DATETIME columns."""
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def soft_delete(table: sa.Table, when: datetime) -> dict[str, Any]:
    """oslo.db's ``soft_delete()``: ``deleted = id``, ``deleted_at`` now, ``updated_at`` kept."""
    return {"deleted": table.c.id, "deleted_at": when, "updated_at": table.c.updated_at}


def chunked(func: Func, size: int = CHUNK) -> Func:
    """``func`` called in steps of at most ``size`` rows until ``limit`` rows were looked at.

    Each step is its own read and short write transaction; the loop ends early
    when a step looks at fewer rows than it asked for (nothing more to look at).
    """

    @functools.wraps(func)
    def run(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
        total = Outcome()
        remaining = limit
        while remaining > 0:
            step = min(remaining, size)
            outcome = func(ctx, step, state)
            total.add(outcome)
            if outcome.seen < step:
                break
            remaining -= outcome.seen
        return total

    return run


def folded(engine: sa.Engine, value: str) -> str:
    """``value`` as the database compares it, for looking up in Python what SQL matched.

    MySQL's ``*_general_ci`` collations ignore case and trailing spaces.
    """
    if engine.dialect.name == "mysql":
        return value.rstrip(" ").lower()
    return value
