"""Stein's ``migrate_empty_ratio``: compute nodes' 0.0/NULL allocation ratios get the config's."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from novadb.config import allocation_ratio
from novadb.online.base import Context, Outcome, Unmigratable, after, next_page, write
from novadb.online.common import utcnow

KINDS = ("cpu", "disk", "ram")


def ratios(ctx: Context) -> dict[str, tuple[float, str]]:
    """Per kind: the ratio Nova writes into an empty column and the option it comes from."""
    return {kind: allocation_ratio(ctx.settings, kind) for kind in KINDS}


def _empty(column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    return sa.or_(column.is_(None), column == 0.0)


def migrate_empty_ratio(ctx: Context, limit: int, state: dict[str, Any]) -> Outcome:
    """Live compute nodes (``deleted = 0``, as Nova) with any ratio 0.0 or NULL.

    Only the empty ratios change; the update re-checks emptiness column by
    column, so a ratio set meanwhile is kept.  A node that needs a ratio the
    options resolve to 0.0 is reported (writing it would change nothing and
    Nova would find the node again on every run).
    """
    assert ctx.main is not None
    cn = ctx.table(ctx.main, "compute_nodes")
    cols = {kind: cn.c[f"{kind}_allocation_ratio"] for kind in KINDS}
    any_empty = sa.or_(*[_empty(c) for c in cols.values()])
    query = (
        sa.select(cn.c.id, *cols.values())
        .where(cn.c.deleted == 0, any_empty, cn.c.id > after(state))
        .order_by(cn.c.id)
        .limit(limit)
    )
    rows = next_page(ctx.main, query, state)
    if not rows:
        return Outcome()
    wanted = ratios(ctx)
    good: list[int] = []
    bad: list[Unmigratable] = []
    for r in rows:
        zero = [
            wanted[kind][1]
            for kind in KINDS
            if r._mapping[cols[kind]] in (None, 0.0) and not wanted[kind][0]
        ]
        if zero:
            bad.append(Unmigratable("compute_nodes", str(r.id), f"[DEFAULT]{zero[0]} is 0.0"))
        else:
            good.append(int(r.id))

    def update(conn: Connection) -> int:
        values: dict[str, Any] = {
            col.name: sa.case((_empty(col), wanted[kind][0]), else_=col)
            for kind, col in cols.items()
        }
        values["updated_at"] = utcnow()
        statement = (
            sa.update(cn).where(cn.c.id.in_(good), cn.c.deleted == 0, any_empty).values(values)
        )
        return conn.execute(statement).rowcount

    done = write(ctx.main, update) if good else 0
    return Outcome(found=len(rows), done=done, unmigratable=bad)
