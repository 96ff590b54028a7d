"""Stein's ``migrate_empty_ratio``: compute nodes' 0.0/NULL allocation ratios get the config's."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from novadb.errors import ConfigError
from novadb.online.base import Context, Outcome, Unmigratable, after, next_page, write
from novadb.online.common import utcnow

KINDS = ("cpu", "disk", "ram")
# nova.conf's initial_<kind>_allocation_ratio defaults.
INITIAL = {"cpu": 4.0, "disk": 1.0, "ram": 1.0}


def _float(ctx: Context, name: str) -> float | None:
    raw = ctx.option("DEFAULT", name)
    if raw is None or not raw.strip():
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"[DEFAULT]{name} = {raw!r} is not a number") from None


def ratios(ctx: Context) -> dict[str, tuple[float, str]]:
    """Per kind: the ratio Nova writes and the option it comes from.

    ``[DEFAULT]<kind>_allocation_ratio`` when set and not 0.0 (Nova: ``r if r
    else initial``), else ``[DEFAULT]initial_<kind>_allocation_ratio``.
    """
    out: dict[str, tuple[float, str]] = {}
    for kind in KINDS:
        name = f"{kind}_allocation_ratio"
        value = _float(ctx, name)
        if value:
            out[kind] = (value, name)
            continue
        initial = _float(ctx, f"initial_{name}")
        out[kind] = (INITIAL[kind] if initial is None else initial, f"initial_{name}")
    return out


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
