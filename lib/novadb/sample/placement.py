"""The Placement half of the sample cloud: what a healthy Nova would have left there.

:mod:`novadb.sample.cloud` writes cells; this writes, from those cells, the
rows Nova's own services would have written elsewhere, so the Placement
operations have a true cloud to audit, heal and rebuild:

* in the API database, ``nova-manage cell_v2 discover_hosts``'s host mappings
  (``compute_nodes.mapped`` set in the cell, as it does) and host aggregates
  over the hosts;
* in Placement, what placement-api and nova-compute write: the standard
  resource classes and traits, one root provider per live compute node
  (uuid ``compute_nodes.uuid``, name ``hypervisor_hostname``) with the
  inventory :func:`~novadb.placement.nova_side.node_inventory` says Nova reports,
  the aggregates' memberships, and each hosted instance's allocations as
  ``heal_allocations`` would write them
  (:func:`~novadb.placement.resources.resources_from_flavor`), with its
  consumer, untyped as Nova 34 leaves it (it writes below microversion
  1.38).  Providers' generations count the writes Placement would have seen
  (inventory, one per aggregate, one per instance).

Live instances Nova would not allocate for (a task in progress, no host,
flavors heal-allocations refuses, classes the node does not report) get
nothing, and are counted.  Capacity is not checked: the allocations mirror
the cell, however full.  Migrations get no allocations (the sample cloud's are
all finished).  Providers get no traits (Nova's capability traits cannot be
known from the database).

Then the desync helpers break Placement the ways real clouds break, each
returning what it changed so a test can check that a repair undoes exactly
that: a cell restored from a backup with new node uuids (bug 1817833),
instances' allocations lost, allocations left by consumers nobody knows.

Everything is written set-based (``executemany`` in chunks), so a cloud of 500
nodes and 20,000 instances is populated in seconds.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from novadb.cells import Cell
from novadb.config import Settings
from novadb.connections import engine_for
from novadb.errors import BadInput, NovaDbError
from novadb.placement.db import (
    PlacementTables,
    bump_generations,
    chunks,
    class_ids,
    delete_empty_consumers,
    ensure_standard_classes,
    ensure_standard_traits,
    external_ids,
    utcnow,
    write,
)
from novadb.placement.nova_side import (
    ComputeNode,
    Inventory,
    cells_for_placement,
    compute_nodes,
    instances_query,
    node_inventory,
    reflect,
)
from novadb.placement.resources import (
    UnsupportedFlavor,
    flavor_from_instance_extra,
    resources_from_flavor,
)
from novadb.targets import api_exists

CHUNK = 5000  # rows per executemany
ORPHAN_PROJECT = "orphan-project"
ORPHAN_USER = "orphan-user"
ORPHAN_RESOURCES = {"VCPU": 1, "MEMORY_MB": 512}

Rows = list[dict[str, object]]


@dataclass(frozen=True)
class GeneratedPlacement:
    """What :func:`populate_placement` wrote.

    ``rows``: rows inserted per table (API tables prefixed ``API_DB.``).
    ``skipped``: live instances given no allocation, by reason (``task_state``,
    ``not_on_host``, ``unknown_node``, ``bad_flavor``, ``unsupported_flavor``,
    ``not_in_inventory``).  ``aggregates``: uuid -> hosts of every aggregate
    created in the API database (those with hosts are in Placement too).
    """

    rows: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    aggregates: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Desync:
    """What a desync helper changed in Placement.

    ``consumers``: the consumers whose allocations were removed or added;
    ``allocations``: allocation rows deleted or inserted; ``providers``: the
    providers those allocations were on (their generations were bumped once).
    """

    consumers: tuple[str, ...] = ()
    allocations: int = 0
    providers: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Claim:
    """One instance's allocations, as heal_allocations would write them."""

    consumer: str
    project: str
    user: str
    provider: str  # compute node uuid
    resources: dict[str, int]


@dataclass
class _Cloud:
    """Everything read from the cells."""

    nodes: list[ComputeNode] = field(default_factory=list)
    inventory: dict[str, dict[str, Inventory]] = field(default_factory=dict)
    claims: list[_Claim] = field(default_factory=list)
    hosts_by_cell: dict[str, list[str]] = field(default_factory=dict)  # cell uuid -> hosts
    skipped: Counter[str] = field(default_factory=Counter)


def _uuid(rng: random.Random) -> str:
    """A version-4 uuid from ``rng``, so a seed gives the same uuids every run."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _insert(conn: Connection, table: sa.Table, rows: Rows) -> int:
    for part in chunks(rows, CHUNK):
        conn.execute(sa.insert(table), part)
    return len(rows)


def _count(conn: Connection, table: sa.Table) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# --- reading the cells -------------------------------------------------------------------------


def _claims(
    conn: Connection,
    nodes: list[ComputeNode],
    inventory: dict[str, dict[str, Inventory]],
    skipped: Counter[str],
) -> list[_Claim]:
    """Each live instance's allocations, or a reason in ``skipped`` why Nova has none."""
    inst, extra = reflect(conn, "instances"), reflect(conn, "instance_extra")
    bdm = reflect(conn, "block_device_mapping")
    query = instances_query(inst, extra)
    # Nova's is_volume_backed_instance: no image, or a volume as the root device.
    roots = (
        sa.select(bdm.c.instance_uuid)
        .select_from(bdm.join(inst, inst.c.uuid == bdm.c.instance_uuid))
        .where(
            inst.c.deleted == 0,
            bdm.c.deleted == 0,
            bdm.c.boot_index == 0,
            bdm.c.destination_type == "volume",
        )
    )
    volume_rooted = {str(u) for (u,) in conn.execute(roots)}
    node_of = {(n.host, n.hypervisor_hostname): n.uuid for n in nodes}
    resources_of: dict[tuple[str, bool], dict[str, int] | str] = {}  # few distinct flavors
    claims: list[_Claim] = []
    for r in conn.execute(query):
        if r.task_state is not None:
            skipped["task_state"] += 1
            continue
        if r.host is None or r.node is None:
            skipped["not_on_host"] += 1
            continue
        node = node_of.get((r.host, r.node))
        if node is None:
            skipped["unknown_node"] += 1
            continue
        bfv = not r.image_ref or str(r.uuid) in volume_rooted
        key = (str(r.flavor or ""), bfv)
        if key not in resources_of:
            resources_of[key] = _resources(r.flavor, bfv)
        resources = resources_of[key]
        if isinstance(resources, str):
            skipped[resources] += 1
            continue
        if not set(resources) <= set(inventory[node]):
            skipped["not_in_inventory"] += 1
            continue
        claims.append(
            _Claim(str(r.uuid), str(r.project_id), str(r.user_id), node, dict(resources))
        )
    return claims


def _resources(flavor_text: str | None, bfv: bool) -> dict[str, int] | str:
    """The flavor's resources, or why heal_allocations would not write any."""
    try:
        flavor = flavor_from_instance_extra(flavor_text)
        return resources_from_flavor(flavor, boot_from_volume=bfv)
    except UnsupportedFlavor:
        return "unsupported_flavor"
    except BadInput:
        return "bad_flavor"


def _read_cells(settings: Settings, cells: list[Cell]) -> _Cloud:
    cloud = _Cloud()
    for cell in cells:
        with engine_for(cell.url) as engine, engine.connect() as conn:
            nodes = compute_nodes(conn, cell.label)
            inventory = {n.uuid: node_inventory(n, settings) for n in nodes}
            cloud.claims += _claims(conn, nodes, inventory, cloud.skipped)
        cloud.nodes += nodes
        cloud.inventory.update(inventory)
        if cell.uuid is not None:
            cloud.hosts_by_cell[cell.uuid] = sorted({n.host for n in nodes})
    return cloud


# --- the API database and discover_hosts -------------------------------------------------------


def _map_hosts(
    conn: Connection, cells: list[Cell], hosts_by_cell: dict[str, list[str]]
) -> tuple[int, dict[str, set[str]]]:
    """Host mappings for unmapped hosts; return how many, and each cell's now-mapped hosts."""
    hm, cm = reflect(conn, "host_mappings"), reflect(conn, "cell_mappings")
    cell_ids = {str(u): int(i) for u, i in conn.execute(sa.select(cm.c.uuid, cm.c.id))}
    every = sorted({h for hosts in hosts_by_cell.values() for h in hosts})
    mapped: dict[str, int] = {}
    for part in chunks(every):
        query = sa.select(hm.c.host, hm.c.cell_id).where(hm.c.host.in_(part))
        mapped.update({str(h): int(c) for h, c in conn.execute(query)})
    now = utcnow()
    rows: Rows = []
    for cell in cells:
        if cell.uuid is None or cell.uuid not in cell_ids:
            continue
        for host in hosts_by_cell.get(cell.uuid, []):
            if host not in mapped:
                mapped[host] = cell_ids[cell.uuid]
                rows.append({"cell_id": cell_ids[cell.uuid], "host": host, "created_at": now})
    _insert(conn, hm, rows)
    ours = {
        u: {h for h in hosts if mapped.get(h) == cell_ids.get(u)}
        for u, hosts in hosts_by_cell.items()
    }
    return len(rows), ours


def _mark_mapped(cells: list[Cell], mapped: dict[str, set[str]]) -> None:
    """``compute_nodes.mapped = 1`` for the nodes of mapped hosts, as discover_hosts sets it."""
    for cell in cells:
        hosts = sorted(mapped.get(cell.uuid or "", set()))
        if not hosts:
            continue
        with engine_for(cell.url) as engine, engine.begin() as conn:
            cn = reflect(conn, "compute_nodes")
            if "mapped" not in cn.c:
                continue
            for part in chunks(hosts):
                conn.execute(
                    sa.update(cn).where(cn.c.deleted == 0, cn.c.host.in_(part)).values(mapped=1)
                )


def _plan_aggregates(
    rng: random.Random, hosts: list[str], count: int, per_aggregate: int | None
) -> dict[str, tuple[str, ...]]:
    """Aggregate uuid -> hosts: every host in one (round robin), or random ``per_aggregate``."""
    plan: dict[str, tuple[str, ...]] = {}
    for index in range(count):
        if per_aggregate is None:
            members = hosts[index::count]
        else:
            members = sorted(rng.sample(hosts, min(per_aggregate, len(hosts))))
        plan[_uuid(rng)] = tuple(members)
    return plan


def _write_aggregates(conn: Connection, plan: dict[str, tuple[str, ...]]) -> tuple[int, int]:
    """API ``aggregates`` and ``aggregate_hosts``; return the two row counts."""
    agg, agg_hosts = reflect(conn, "aggregates"), reflect(conn, "aggregate_hosts")
    now = utcnow()
    host_rows: Rows = []
    for agg_uuid, hosts in plan.items():
        inserted = conn.execute(
            sa.insert(agg).values(uuid=agg_uuid, name=f"sample-{agg_uuid[:8]}", created_at=now)
        )
        key = inserted.inserted_primary_key
        if key is None:  # pragma: no cover - every dialect we use returns it
            raise NovaDbError("aggregates: the database did not return the new id")
        host_rows += [{"host": h, "aggregate_id": int(key[0]), "created_at": now} for h in hosts]
    _insert(conn, agg_hosts, host_rows)
    return len(plan), len(host_rows)


# --- Placement --------------------------------------------------------------------------------


def _next_id(conn: Connection, table: sa.Table) -> int:
    return int(conn.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0) + 1


def _refuse_nonempty(conn: Connection, tables: PlacementTables) -> None:
    if conn.execute(sa.select(tables.providers.c.id).limit(1)).first() is not None:
        raise NovaDbError(
            "the Placement database already has resource providers; "
            "populate_placement writes a fresh one"
        )


def _write_placement(
    conn: Connection,
    tables: PlacementTables,
    cloud: _Cloud,
    plan: dict[str, tuple[str, ...]],
) -> Counter[str]:
    """All of Placement in one transaction: nothing half-written if it fails."""
    _refuse_nonempty(conn, tables)
    counts: Counter[str] = Counter()
    counts["resource_classes"] = ensure_standard_classes(conn, tables)
    counts["traits"] = ensure_standard_traits(conn, tables)
    classes = class_ids(conn, tables)
    now = utcnow()

    # Providers get explicit ids, so everything else can point at them in bulk.
    first = _next_id(conn, tables.providers)
    rp_id = {n.uuid: first + i for i, n in enumerate(cloud.nodes)}
    writes: Counter[str] = Counter()  # generation bumps per provider uuid
    for node in cloud.nodes:
        writes[node.uuid] += 1 if cloud.inventory[node.uuid] else 0
    providers_of: dict[str, list[str]] = defaultdict(list)
    for node in cloud.nodes:
        providers_of[node.host].append(node.uuid)
    members = {a: [p for h in hosts for p in providers_of[h]] for a, hosts in plan.items()}
    for providers in members.values():
        writes.update(providers)
    writes.update(c.provider for c in cloud.claims)

    counts["resource_providers"] = _insert(
        conn,
        tables.providers,
        [
            {
                "id": rp_id[n.uuid],
                "uuid": n.uuid,
                "name": n.hypervisor_hostname,
                "generation": writes[n.uuid],
                "root_provider_id": rp_id[n.uuid],
                "parent_provider_id": None,
                "created_at": now,
                "updated_at": now if writes[n.uuid] else None,
            }
            for n in cloud.nodes
        ],
    )
    counts["inventories"] = _insert(
        conn,
        tables.inventories,
        [
            inv.row(rp_id[node], classes[rclass], now)
            for node, inventory in cloud.inventory.items()
            for rclass, inv in inventory.items()
        ],
    )

    # Placement creates an aggregate when the first provider joins it.
    used = [a for a, providers in members.items() if providers]
    first_agg = _next_id(conn, tables.aggregates)
    agg_id = {a: first_agg + i for i, a in enumerate(used)}
    counts["placement_aggregates"] = _insert(
        conn,
        tables.aggregates,
        [{"id": agg_id[a], "uuid": a, "created_at": now} for a in used],
    )
    counts["resource_provider_aggregates"] = _insert(
        conn,
        tables.provider_aggregates,
        [
            {"resource_provider_id": rp_id[p], "aggregate_id": agg_id[a], "created_at": now}
            for a in used
            for p in sorted(set(members[a]))
        ],
    )

    before = {"projects": _count(conn, tables.projects), "users": _count(conn, tables.users)}
    projects = external_ids(conn, tables.projects, (c.project for c in cloud.claims))
    users = external_ids(conn, tables.users, (c.user for c in cloud.claims))
    counts["projects"] = _count(conn, tables.projects) - before["projects"]
    counts["users"] = _count(conn, tables.users) - before["users"]
    counts["consumers"] = _insert(
        conn,
        tables.consumers,
        [
            {
                "uuid": c.consumer,
                "project_id": projects[c.project],
                "user_id": users[c.user],
                "generation": 1,
                "created_at": now,
                "updated_at": now,
            }
            for c in cloud.claims
        ],
    )
    counts["allocations"] = _insert(
        conn,
        tables.allocations,
        [
            {
                "resource_provider_id": rp_id[c.provider],
                "consumer_id": c.consumer,
                "resource_class_id": classes[rclass],
                "used": used_amount,
                "created_at": now,
            }
            for c in cloud.claims
            for rclass, used_amount in sorted(c.resources.items())
        ],
    )
    return counts


def populate_placement(
    settings: Settings,
    *,
    aggregates: int = 2,
    hosts_per_aggregate: int | None = None,
    seed: int = 42,
) -> GeneratedPlacement:
    """Write the Placement (and API host/aggregate) rows of the cells' healthy cloud.

    ``aggregates`` host aggregates are created; with ``hosts_per_aggregate``
    None every host is in exactly one (round robin), else each aggregate gets
    that many hosts drawn at random (so hosts may share aggregates).  The
    Placement database must have no resource providers yet.  Without an API
    database (a SQLite file not there) nothing is written there.
    """
    if aggregates < 0:
        raise BadInput(f"aggregates must be >= 0, not {aggregates}")
    if hosts_per_aggregate is not None and hosts_per_aggregate < 0:
        raise BadInput(f"hosts_per_aggregate must be >= 0, not {hosts_per_aggregate}")
    rng = random.Random(seed)
    cells = cells_for_placement(settings)
    with engine_for(settings.url("placement")) as placement:
        tables = PlacementTables(placement)
        with placement.connect() as conn:
            _refuse_nonempty(conn, tables)  # before the API is touched
        cloud = _read_cells(settings, cells)
        hosts = sorted({n.host for n in cloud.nodes})
        plan = _plan_aggregates(rng, hosts, aggregates, hosts_per_aggregate)
        counts: Counter[str] = Counter()
        if api_exists(settings):
            with engine_for(settings.url("api")) as api, api.begin() as conn:
                mapped_count, mapped = _map_hosts(conn, cells, cloud.hosts_by_cell)
                made, joined = _write_aggregates(conn, plan)
            counts["API_DB.host_mappings"] = mapped_count
            counts["API_DB.aggregates"], counts["API_DB.aggregate_hosts"] = made, joined
            _mark_mapped(cells, mapped)
        else:
            plan = {}
        with placement.begin() as conn:
            counts.update(_write_placement(conn, tables, cloud, plan))
    return GeneratedPlacement(dict(counts), dict(cloud.skipped), plan)


# --- desync helpers ---------------------------------------------------------------------------


def restore_cell_with_new_uuids(
    cell_engine: Engine, fraction: float = 1.0, *, seed: int = 0
) -> dict[str, str]:
    """Give a ``fraction`` of a cell's live compute nodes new uuids; return old -> new.

    What restoring the cell database from a backup taken before the nodes
    were recreated looks like: same ``hypervisor_hostname``, another uuid, so
    nova-compute's provider create hits Placement's unique name (409, bug
    1817833).  Only ``compute_nodes.uuid`` changes: instances point at their
    node by host/node name and ``compute_id``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise BadInput(f"fraction must be between 0 and 1, not {fraction}")
    rng = random.Random(seed)
    with cell_engine.begin() as conn:
        cn = reflect(conn, "compute_nodes")
        query = (
            sa.select(cn.c.id, cn.c.uuid)
            .where(cn.c.deleted == 0, cn.c.uuid.is_not(None))
            .order_by(cn.c.id)
        )
        rows = [(int(i), str(u)) for i, u in conn.execute(query)]
        chosen = sorted(rng.sample(rows, round(fraction * len(rows))))
        renamed = {old: _uuid(rng) for _, old in chosen}
        if chosen:
            statement = (
                sa.update(cn)
                .where(cn.c.id == sa.bindparam("b_id"))
                .values(uuid=sa.bindparam("b_uuid"))
            )
            conn.execute(statement, [{"b_id": i, "b_uuid": renamed[old]} for i, old in chosen])
    return renamed


def _live_instances(settings: Settings) -> set[str]:
    live: set[str] = set()
    for cell in cells_for_placement(settings):
        with engine_for(cell.url) as engine, engine.connect() as conn:
            inst = reflect(conn, "instances")
            live |= {
                str(u) for (u,) in conn.execute(sa.select(inst.c.uuid).where(inst.c.deleted == 0))
            }
    return live


def _generations(
    conn: Connection, tables: PlacementTables, ids: Iterable[int]
) -> tuple[dict[int, int | None], tuple[str, ...]]:
    """Current generation per provider id (to compare-and-swap), and the providers' uuids."""
    rp = tables.providers
    found: dict[int, int | None] = {}
    uuids: list[str] = []
    for part in chunks(sorted(set(ids))):
        query = sa.select(rp.c.id, rp.c.uuid, rp.c.generation).where(rp.c.id.in_(part))
        for i, u, g in conn.execute(query):
            found[int(i)] = None if g is None else int(g)
            uuids.append(str(u))
    return found, tuple(sorted(uuids))


def drop_allocations(target: Settings | Engine, count: int, seed: int = 0) -> Desync:
    """Delete ``count`` instances' allocations and consumers: "allocations lost".

    Candidates are the consumers that hold allocations; given ``Settings``
    (not just the Placement engine) only those that are live instances in the
    cells.  Each provider losing allocations has its
    generation bumped, as Placement's DELETE would.
    """
    if count < 0:
        raise BadInput(f"count must be >= 0, not {count}")
    if isinstance(target, Engine):
        return _drop(target, count, seed, None)
    live = _live_instances(target)
    with engine_for(target.url("placement")) as engine:
        return _drop(engine, count, seed, live)


def _drop(engine: Engine, count: int, seed: int, live: set[str] | None) -> Desync:
    tables = PlacementTables(engine)
    alloc, consumers = tables.allocations, tables.consumers

    def work(conn: Connection) -> Desync:
        rng = random.Random(seed)  # fresh per attempt: a retry picks the same consumers
        query = (
            sa.select(consumers.c.uuid)
            .where(sa.exists().where(alloc.c.consumer_id == consumers.c.uuid))
            .order_by(consumers.c.uuid)
        )
        candidates = [str(u) for (u,) in conn.execute(query)]
        if live is not None:
            candidates = [u for u in candidates if u in live]
        chosen = sorted(rng.sample(candidates, min(count, len(candidates))))
        provider_ids: set[int] = set()
        for part in chunks(chosen):
            query = sa.select(alloc.c.resource_provider_id).where(alloc.c.consumer_id.in_(part))
            provider_ids |= {int(i) for (i,) in conn.execute(query)}
        expected, uuids = _generations(conn, tables, provider_ids)
        deleted = 0
        for part in chunks(chosen):
            deleted += conn.execute(sa.delete(alloc).where(alloc.c.consumer_id.in_(part))).rowcount
        delete_empty_consumers(conn, tables, chosen)
        bump_generations(conn, tables.providers, expected)
        return Desync(tuple(chosen), deleted, uuids)

    return write(engine, work)


def add_orphan_allocations(placement_engine: Engine, count: int, seed: int = 0) -> Desync:
    """Allocate ``ORPHAN_RESOURCES`` for ``count`` consumers that are nobody.

    The consumer uuids are new (neither instances nor migrations), untyped as
    a deleted instance's leaked allocations would be, owned by
    ``orphan-project``/``orphan-user``, each on a random provider that
    reports VCPU and MEMORY_MB.  Providers' generations are bumped.
    """
    if count < 0:
        raise BadInput(f"count must be >= 0, not {count}")
    tables = PlacementTables(placement_engine)
    inv, classes_t = tables.inventories, tables.classes

    def work(conn: Connection) -> Desync:
        rng = random.Random(seed)
        if count == 0:
            return Desync()
        query = (
            sa.select(inv.c.resource_provider_id)
            .select_from(inv.join(classes_t, classes_t.c.id == inv.c.resource_class_id))
            .where(classes_t.c.name.in_(list(ORPHAN_RESOURCES)))
            .group_by(inv.c.resource_provider_id)
            .having(sa.func.count() == len(ORPHAN_RESOURCES))
            .order_by(inv.c.resource_provider_id)
        )
        providers = [int(i) for (i,) in conn.execute(query)]
        if not providers:
            raise BadInput("no resource provider reports VCPU and MEMORY_MB inventory")
        placed = [(_uuid(rng), rng.choice(providers)) for _ in range(count)]
        expected, uuids = _generations(conn, tables, (p for _, p in placed))
        classes = class_ids(conn, tables)
        project = external_ids(conn, tables.projects, [ORPHAN_PROJECT])[ORPHAN_PROJECT]
        user = external_ids(conn, tables.users, [ORPHAN_USER])[ORPHAN_USER]
        now = utcnow()
        _insert(
            conn,
            tables.consumers,
            [
                {
                    "uuid": c,
                    "project_id": project,
                    "user_id": user,
                    "generation": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                for c, _ in placed
            ],
        )
        inserted = _insert(
            conn,
            tables.allocations,
            [
                {
                    "resource_provider_id": p,
                    "consumer_id": c,
                    "resource_class_id": classes[rclass],
                    "used": used,
                    "created_at": now,
                }
                for c, p in placed
                for rclass, used in ORPHAN_RESOURCES.items()
            ],
        )
        bump_generations(conn, tables.providers, expected)
        return Desync(tuple(sorted(c for c, _ in placed)), inserted, uuids)

    return write(placement_engine, work)
