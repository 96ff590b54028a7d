"""``sync-aggregates``: Nova's host aggregates, mirrored as Placement aggregates.

For every host of every host aggregate in the API database, the host's
compute node provider must be a member of the Placement aggregate with the
same uuid.  Like ``nova-manage placement sync_aggregates`` this only adds,
never removes.  Hosts that cannot be resolved are collected and reported at
the end with nova-manage 34's codes: 4 a host with no host mapping, 5 a
mapped host with no compute node (5 over 4, as nova-manage's last message
wins), 2 a compute node with no provider.

The last is where nova-manage 34 stops: it asks Placement for the provider's
aggregates by the node's uuid, Placement answers 404, and its client raises
``ResourceProviderAggregateRetrievalFailed`` ("Failed to get aggregates for
resource provider with UUID ..."), which ends the run with exit 2 (its code 6,
"resource provider not found", is only reached through a lookup by name,
which sync_aggregates never does).  Here the run carries on: every other
membership is independent of the missing provider and is added, so one
compute node nova-compute has not registered yet does not keep the rest of
the cloud out of its aggregates (and out of the scheduler's aggregate-based
placement filters); the exit code is nova-manage's 2 all the same, and wins
over 4 and 5 as it does there.  A host with several compute nodes (ironic)
stops the run with exit 1, as in Nova, before anything is written.  All
additions go in one transaction, with the providers' generations bumped by
compare-and-swap.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from novadb import exit_codes
from novadb.cells import Cell, list_cells
from novadb.config import Settings
from novadb.connections import engine_for
from novadb.errors import NovaDbError
from novadb.placement.db import (
    PlacementTables,
    bump_generations,
    chunks,
    utcnow,
    write,
    writer_lock,
)
from novadb.progress import Event, Progress, ignore


class TooManyComputes(NovaDbError):
    """A host with more than one compute node: which provider is meant is unknowable."""

    exit_code = exit_codes.AGGREGATES_TOO_MANY_NODES


@dataclass(frozen=True)
class AggregatesResult:
    """What was added and which hosts could not be resolved."""

    added: list[tuple[str, str, str]] = field(default_factory=list)  # aggregate, host, provider
    already: int = 0
    aggregates: int = 0
    unmapped_hosts: list[str] = field(default_factory=list)
    missing_nodes: list[str] = field(default_factory=list)
    missing_providers: list[tuple[str, str]] = field(default_factory=list)  # host, node uuid
    dry_run: bool = False
    elapsed: float = 0.0

    @property
    def exit_code(self) -> int:
        """nova-manage 34's: 2 (where it stops) over 5 over 4."""
        if self.missing_providers:
            return exit_codes.AGGREGATES_NO_PROVIDER
        if self.missing_nodes:
            return exit_codes.AGGREGATES_NO_NODE
        if self.unmapped_hosts:
            return exit_codes.AGGREGATES_UNMAPPED
        return exit_codes.AGGREGATES_OK


def _api_aggregates(
    settings: Settings,
) -> tuple[dict[str, list[str]], dict[str, int], dict[int, Cell]]:
    """Map aggregate uuid -> hosts, host -> cell mapping id, cell mapping id -> Cell."""
    with engine_for(settings.url("api")) as api:
        meta = sa.MetaData()
        meta.reflect(api, only=["aggregates", "aggregate_hosts", "host_mappings", "cell_mappings"])
        agg, hosts = meta.tables["aggregates"], meta.tables["aggregate_hosts"]
        hm, cm = meta.tables["host_mappings"], meta.tables["cell_mappings"]
        members: dict[str, list[str]] = defaultdict(list)
        with api.connect() as conn:
            query = (
                sa.select(agg.c.uuid, hosts.c.host)
                .select_from(agg.join(hosts, hosts.c.aggregate_id == agg.c.id))
                .order_by(agg.c.id, hosts.c.host)
            )
            for uuid, host in conn.execute(query):
                members[str(uuid)].append(str(host))
            query = sa.select(agg.c.uuid).order_by(agg.c.id)
            for (uuid,) in conn.execute(query):
                members.setdefault(str(uuid), [])
            mapped = {str(h): int(c) for h, c in conn.execute(sa.select(hm.c.host, hm.c.cell_id))}
            cell_ids = {str(u): int(i) for i, u in conn.execute(sa.select(cm.c.id, cm.c.uuid))}
        cells = {cell_ids[c.uuid]: c for c in list_cells(api, settings.main) if c.uuid in cell_ids}
    return dict(members), mapped, cells


def _nodes_by_host(cell_url: str, hosts: set[str]) -> dict[str, list[str]]:
    with engine_for(cell_url) as engine, engine.connect() as conn:
        cn = sa.Table("compute_nodes", sa.MetaData(), autoload_with=conn)
        out: dict[str, list[str]] = defaultdict(list)
        for part in chunks(sorted(hosts)):
            query = sa.select(cn.c.host, cn.c.uuid).where(cn.c.deleted == 0, cn.c.host.in_(part))
            for host, uuid in conn.execute(query):
                out[str(host)].append(str(uuid))
    return out


def sync_aggregates(
    settings: Settings,
    *,
    dry_run: bool = False,
    progress: Progress = ignore,
    lock_held: bool = False,
) -> AggregatesResult:
    """Add every aggregate host's provider to its Placement aggregate."""
    # Placement's database first: an unconfigured one is refused before any connection.
    placement_url = settings.placement_url()
    started = time.monotonic()
    members, mapped, cells = _api_aggregates(settings)
    progress(Event("sync-aggregates", "step", f"{len(members)} aggregates in the API database"))
    unmapped = sorted({h for hs in members.values() for h in hs if h not in mapped})
    by_cell: dict[int, set[str]] = defaultdict(set)
    for hosts in members.values():
        for host in hosts:
            if host in mapped:
                by_cell[mapped[host]].add(host)
    node_of: dict[str, str] = {}
    missing_nodes: list[str] = []
    for cell_id, hosts in sorted(by_cell.items()):
        cell = cells.get(cell_id)
        found = _nodes_by_host(cell.url, hosts) if cell is not None else {}
        for host in sorted(hosts):
            nodes = found.get(host, [])
            if len(nodes) > 1:
                raise TooManyComputes(
                    f"Unexpected number of compute node records ({len(nodes)}) found for host "
                    f"{host}. There should only be a one-to-one mapping."
                )
            if not nodes:
                missing_nodes.append(host)
            else:
                node_of[host] = nodes[0]
    wanted = sorted({(a, h) for a, hs in members.items() for h in hs if h in node_of})
    with (
        engine_for(placement_url) as engine,
        writer_lock(engine, held=lock_held or dry_run),
    ):
        tables = PlacementTables(engine)

        def work(conn: Connection) -> tuple[list[tuple[str, str, str]], int, list]:
            return _add(conn, tables, wanted, node_of, dry_run)

        added, already, missing_rps = write(engine, work)
    return AggregatesResult(
        added=added,
        already=already,
        aggregates=len(members),
        unmapped_hosts=unmapped,
        missing_nodes=sorted(missing_nodes),
        missing_providers=missing_rps,
        dry_run=dry_run,
        elapsed=time.monotonic() - started,
    )


def _add(
    conn: Connection,
    t: PlacementTables,
    wanted: list[tuple[str, str]],
    node_of: dict[str, str],
    dry_run: bool,
) -> tuple[list[tuple[str, str, str]], int, list[tuple[str, str]]]:
    rp, pa, rpa = t.providers, t.aggregates, t.provider_aggregates
    providers: dict[str, tuple[int, int | None]] = {}
    for part in chunks(sorted(set(node_of.values()))):
        query = sa.select(rp.c.uuid, rp.c.id, rp.c.generation).where(rp.c.uuid.in_(part))
        providers.update({str(u): (int(i), g) for u, i, g in conn.execute(query)})
    missing = sorted({(h, node_of[h]) for _, h in wanted if node_of[h] not in providers})
    pairs = [(a, h) for a, h in wanted if node_of[h] in providers]
    agg_ids = _aggregate_ids(conn, pa, sorted({a for a, _ in pairs}), create=not dry_run)
    have: set[tuple[int, int]] = set()
    rp_ids = sorted({providers[node_of[h]][0] for _, h in pairs})
    for part in chunks(rp_ids):
        query = sa.select(rpa.c.resource_provider_id, rpa.c.aggregate_id).where(
            rpa.c.resource_provider_id.in_(part)
        )
        have |= {(int(r), int(a)) for r, a in conn.execute(query)}
    added: list[tuple[str, str, str]] = []
    rows = []
    already = 0
    now = utcnow()
    for agg, host in pairs:
        rp_id = providers[node_of[host]][0]
        agg_id = agg_ids.get(agg)
        if agg_id is not None and (rp_id, agg_id) in have:
            already += 1
            continue
        added.append((agg, host, node_of[host]))
        if agg_id is not None:
            rows.append({"resource_provider_id": rp_id, "aggregate_id": agg_id, "created_at": now})
    if rows and not dry_run:
        conn.execute(sa.insert(rpa), rows)
        touched = {r["resource_provider_id"] for r in rows}
        bump_generations(conn, rp, {i: g for i, g in providers.values() if i in touched})
    return added, already, missing


def _aggregate_ids(
    conn: Connection, pa: sa.Table, uuids: list[str], *, create: bool
) -> dict[str, int]:
    """``placement_aggregates`` ids for aggregate uuids, created unless dry-run."""
    found: dict[str, int] = {}
    for part in chunks(uuids):
        query = sa.select(pa.c.uuid, pa.c.id).where(pa.c.uuid.in_(part))
        found.update({str(u): int(i) for u, i in conn.execute(query)})
    missing = [u for u in uuids if u not in found]
    if missing and create:
        conn.execute(sa.insert(pa), [{"uuid": u, "created_at": utcnow()} for u in missing])
        for part in chunks(missing):
            query = sa.select(pa.c.uuid, pa.c.id).where(pa.c.uuid.in_(part))
            found.update({str(u): int(i) for u, i in conn.execute(query)})
    return found
