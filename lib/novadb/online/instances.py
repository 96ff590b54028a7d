"""Rocky's ``populate_missing_availability_zones``: instances get their host's zone."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from novadb.online.base import Context, Outcome, Unmigratable, after, next_page, write
from novadb.online.common import folded, utcnow

AZ_KEY = "availability_zone"


def host_zones(ctx: Context, hosts: set[str]) -> dict[str, str]:
    """Zone of each of ``hosts`` that is in an aggregate with ``availability_zone`` metadata.

    Nova takes the first aggregate its query returns (no ORDER BY); here the
    lowest aggregate id, so the choice is stable.  Keys are folded as the API
    database compares hosts.
    """
    assert ctx.api is not None
    if not hosts:
        return {}
    agg_hosts = ctx.table(ctx.api, "aggregate_hosts")
    meta = ctx.table(ctx.api, "aggregate_metadata")
    query = (
        sa.select(agg_hosts.c.host, meta.c.value)
        .select_from(agg_hosts.join(meta, meta.c.aggregate_id == agg_hosts.c.aggregate_id))
        .where(meta.c.key == AZ_KEY, agg_hosts.c.host.in_(sorted(hosts)))
        .order_by(agg_hosts.c.aggregate_id, agg_hosts.c.id)
    )
    zones: dict[str, str] = {}
    with ctx.api.connect() as conn:
        for host, zone in conn.execute(query):
            zones.setdefault(folded(ctx.api, host), zone)
    return zones


def populate_missing_availability_zones(
    ctx: Context, limit: int, state: dict[str, Any]
) -> Outcome:
    """Instances (deleted ones too: Nova's raw query) with a host and no zone get the host's.

    The host's zone comes from the API database's aggregates, else
    ``[DEFAULT]default_availability_zone`` (default ``nova``).  Instances with
    no host are not candidates (Nova: "no reasonable AZ to set"); one whose
    host is an empty string is reported, as Nova would write NULL back and
    count it done on every run.  The write is conditional on the zone still
    being NULL and the host unchanged.
    """
    assert ctx.main is not None and ctx.api is not None
    inst = ctx.table(ctx.main, "instances")
    query = (
        sa.select(inst.c.id, inst.c.host)
        .where(
            inst.c.host.is_not(None),
            inst.c.availability_zone.is_(None),
            inst.c.id > after(state),
        )
        .order_by(inst.c.id)
        .limit(limit)
    )
    rows = next_page(ctx.main, query, state)
    if not rows:
        return Outcome()
    empty = "host is an empty string"
    bad = [Unmigratable("instances", str(r.id), empty) for r in rows if not r.host]
    good = {int(r.id): str(r.host) for r in rows if r.host}
    zones = host_zones(ctx, set(good.values()))
    default = ctx.option("DEFAULT", "default_availability_zone", "nova")
    zone_of = {i: zones.get(folded(ctx.api, host), default) for i, host in good.items()}
    done = _set_zones(ctx.main, inst, good, zone_of) if good else 0
    return Outcome(found=len(rows), done=done, unmigratable=bad)


def _set_zones(
    engine: Engine, inst: sa.Table, hosts: dict[int, str], zones: dict[int, str | None]
) -> int:
    def update(conn: Connection) -> int:
        statement = (
            sa.update(inst)
            .where(
                inst.c.id.in_(list(hosts)),
                inst.c.availability_zone.is_(None),
                inst.c.host == sa.case(hosts, value=inst.c.id),
            )
            .values(availability_zone=sa.case(zones, value=inst.c.id), updated_at=utcnow())
        )
        return conn.execute(statement).rowcount

    return write(engine, update)
