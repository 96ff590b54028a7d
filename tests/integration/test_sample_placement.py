"""The sample cloud's Placement half is what Nova would hold, and the desyncs do what they say.

Each cloud has two mapped cells (and a mapped cell0 whose database is never
created: Placement work must skip cell0 without connecting to it), filled by
``sample_cloud.populate``, with a few instances edited into the cases Nova
treats specially (a task in progress, no host, boot from volume).  The
expectations are recomputed here from the cell rows with plain SQL.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import os_resource_classes as orc
import os_traits
import pytest
import sqlalchemy as sa
from novadb.config import Settings, load_settings
from novadb.connections import create_engine
from novadb.errors import BadInput, NovaDbError
from novadb.placement.nova_side import compute_nodes, node_inventory
from novadb.sample.cloud import CloudSpec, populate
from novadb.sample.placement import (
    ORPHAN_PROJECT,
    ORPHAN_RESOURCES,
    ORPHAN_USER,
    GeneratedPlacement,
    add_orphan_allocations,
    drop_allocations,
    populate_placement,
    restore_cell_with_new_uuids,
)
from novadb.schema.sync import sync

from tests.integration.clouds import (
    Cloud,
    build,
    consumers,
    expected_allocations,
    generations,
    live_nodes,
    make_special,
    placement_allocations,
)


@pytest.fixture
def cloud(new_db: Callable[[], str]) -> Iterator[Cloud]:
    c = build(new_db, {"cell1": (200, 5), "cell2": (40, 2)})
    yield c
    c.close()


@pytest.fixture
def small(sqlite_db: Callable[[], str]) -> Iterator[Cloud]:
    c = build(sqlite_db, {"cell1": (30, 3)})
    yield c
    c.close()


# -- populate_placement ---------------------------------------------------------------------------


def test_placement_is_what_nova_would_hold(cloud: Cloud) -> None:
    cases = make_special(cloud)
    result = populate_placement(cloud.settings, aggregates=3, seed=5)
    assert isinstance(result, GeneratedPlacement)
    assert result.skipped == {"task_state": 3, "not_on_host": 1}

    # Standard classes with Placement's ids (VCPU is 0, on MariaDB too), every os-traits trait.
    classes = cloud.rows(cloud.placement, "SELECT id, name FROM resource_classes ORDER BY id")
    assert [(int(i), str(n)) for i, n in classes] == list(enumerate(orc.STANDARDS))
    traits = {str(r[0]) for r in cloud.rows(cloud.placement, "SELECT name FROM traits")}
    assert traits == set(os_traits.get_traits())

    # One root provider per live compute node, named after it.
    nodes = live_nodes(cloud)
    assert len(nodes) == 7
    providers = cloud.rows(
        cloud.placement,
        "SELECT id, uuid, name, root_provider_id, parent_provider_id FROM resource_providers",
    )
    assert {str(u): str(n) for _, u, n, _, _ in providers} == {u: v[2] for u, v in nodes.items()}
    assert all(root == i and parent is None for i, _, _, root, parent in providers)

    # Inventories exactly as node_inventory says.
    inventories: dict[str, dict[str, tuple[Any, ...]]] = defaultdict(dict)
    sql = (
        "SELECT rp.uuid, rc.name, i.total, i.reserved, i.min_unit, i.max_unit, i.step_size, "
        "i.allocation_ratio FROM inventories i "
        "JOIN resource_providers rp ON rp.id = i.resource_provider_id "
        "JOIN resource_classes rc ON rc.id = i.resource_class_id"
    )
    for provider, rclass, *values in cloud.rows(cloud.placement, sql):
        inventories[str(provider)][str(rclass)] = tuple(values)
    expected_inventories: dict[str, dict[str, tuple[Any, ...]]] = {}
    for name, engine in cloud.cells.items():
        with engine.connect() as conn:
            for node in compute_nodes(conn, name):
                expected_inventories[node.uuid] = {
                    rclass: (
                        i.total,
                        i.reserved,
                        i.min_unit,
                        i.max_unit,
                        i.step_size,
                        i.allocation_ratio,
                    )
                    for rclass, i in node_inventory(node, cloud.settings).items()
                }
    assert inventories == expected_inventories

    # Allocations: every live hosted instance without a task, as heal_allocations would write.
    expected, owners = expected_allocations(cloud)
    actual = placement_allocations(cloud)
    assert actual == expected
    skipped = set(cases["task_state"] + cases["not_on_host"])
    assert not skipped & set(actual)
    for u in cases["volume_root"] + cases["no_image"]:
        (resources,) = actual[u].values()
        assert "DISK_GB" not in resources  # the sample flavors have no ephemeral disk or swap
    assert consumers(cloud) == {u: (*owners[u], None, 1) for u in expected}  # as Nova 34 writes

    # Aggregates: API aggregates with uuids, the same uuids in Placement, members = hosts' nodes.
    api_members: dict[str, set[str]] = defaultdict(set)
    sql = "SELECT a.uuid, h.host FROM aggregates a JOIN aggregate_hosts h ON h.aggregate_id = a.id"
    for agg, host in cloud.rows(cloud.api, sql):
        api_members[str(agg)].add(str(host))
    assert {a: set(h) for a, h in result.aggregates.items()} == api_members
    assert len(api_members) == 3
    hosts = {v[1] for v in nodes.values()}
    assert set().union(*api_members.values()) == hosts  # round robin: every host in one
    assert sum(len(h) for h in api_members.values()) == len(hosts)
    placement_members: dict[str, set[str]] = defaultdict(set)
    sql = (
        "SELECT pa.uuid, rp.uuid FROM placement_aggregates pa "
        "JOIN resource_provider_aggregates rpa ON rpa.aggregate_id = pa.id "
        "JOIN resource_providers rp ON rp.id = rpa.resource_provider_id"
    )
    for agg, provider in cloud.rows(cloud.placement, sql):
        placement_members[str(agg)].add(str(provider))
    assert placement_members == {
        agg: {u for u, v in nodes.items() if v[1] in members}
        for agg, members in api_members.items()
    }

    # Generations count the writes: inventory, aggregates joined, instances allocated.
    per_provider = Counter(p for a in expected.values() for p in a)
    joined = Counter(p for members in placement_members.values() for p in members)
    assert generations(cloud) == {u: 1 + joined[u] + per_provider[u] for u in nodes}

    # Host mappings to each host's cell; discover_hosts marks the nodes mapped.
    mapped = {
        str(h): int(i) for h, i in cloud.rows(cloud.api, "SELECT host, cell_id FROM host_mappings")
    }
    assert mapped == {v[1]: cloud.cell_ids[v[0]] for v in nodes.values()}
    for engine in cloud.cells.values():
        assert cloud.rows(
            engine, "SELECT DISTINCT mapped FROM compute_nodes WHERE deleted = 0"
        ) == [(1,)]

    # The counts say what was written.
    assert result.rows["resource_providers"] == 7
    assert result.rows["consumers"] == len(expected)
    assert result.rows["allocations"] == sum(len(r) for a in expected.values() for r in a.values())
    assert result.rows["API_DB.host_mappings"] == 7
    assert result.rows["API_DB.aggregate_hosts"] == 7
    assert result.rows["resource_classes"] == len(orc.STANDARDS)
    assert result.rows["projects"] == len({p for p, _ in owners.values()})


def test_populate_refuses_a_placement_with_providers(small: Cloud) -> None:
    populate_placement(small.settings)
    before = small.rows(small.api, "SELECT count(*) FROM aggregates")
    with pytest.raises(NovaDbError, match="already has resource providers"):
        populate_placement(small.settings)
    assert small.rows(small.api, "SELECT count(*) FROM aggregates") == before


def test_hosts_per_aggregate_draws_hosts_and_mapped_hosts_are_kept(small: Cloud) -> None:
    engine = small.cells["cell1"]
    first = str(small.rows(engine, "SELECT host FROM compute_nodes WHERE deleted = 0")[0][0])
    small.run(small.api, "INSERT INTO host_mappings (cell_id, host) VALUES (:c, :h)",
              c=small.cell_ids["cell1"], h=first)  # fmt: skip
    result = populate_placement(small.settings, aggregates=4, hosts_per_aggregate=2, seed=1)
    assert len(result.aggregates) == 4
    assert all(len(hosts) == 2 for hosts in result.aggregates.values())
    assert result.rows["API_DB.aggregate_hosts"] == 8
    assert result.rows["resource_provider_aggregates"] == 8
    assert result.rows["API_DB.host_mappings"] == 2
    assert len(small.rows(small.api, "SELECT host FROM host_mappings")) == 3
    assert result.skipped == {}


def test_same_seed_same_aggregates(sqlite_db: Callable[[], str]) -> None:
    draws = []
    for _ in range(2):
        c = build(sqlite_db, {"cell1": (5, 4)})
        hosts = sorted(
            str(r[0])
            for r in c.rows(c.cells["cell1"], "SELECT host FROM compute_nodes WHERE deleted = 0")
        )
        result = populate_placement(c.settings, aggregates=2, hosts_per_aggregate=2, seed=3)
        # Host names are random per cloud: compare positions in the sorted host list.
        draws.append({a: [hosts.index(h) for h in hs] for a, hs in result.aggregates.items()})
        c.close()
    assert draws[0] == draws[1]


def test_an_unmapped_local_cell_gets_no_host_mappings(sqlite_db: Callable[[], str]) -> None:
    settings = load_settings(
        database=sqlite_db(), api_database=sqlite_db(), placement_database=sqlite_db()
    )
    sync(settings)
    main, api = create_engine(settings.url("main")), create_engine(settings.url("api"))
    populate(main, api, CloudSpec(instances=10, hosts=2, seed=4))
    result = populate_placement(settings)
    assert result.rows["resource_providers"] == 2
    assert result.rows["API_DB.host_mappings"] == 0
    assert result.rows["API_DB.aggregate_hosts"] == 2
    with main.connect() as conn:
        live = conn.execute(sa.text("SELECT uuid FROM instances WHERE deleted = 0")).all()
    assert result.rows["consumers"] == len(live)
    main.dispose()
    api.dispose()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: populate_placement(s, aggregates=-1), "aggregates"),
        (lambda s: populate_placement(s, hosts_per_aggregate=-1), "hosts_per_aggregate"),
        (lambda s: drop_allocations(s, -1), "count"),
    ],
)
def test_bad_input(
    sqlite_db: Callable[[], str], call: Callable[[Settings], object], message: str
) -> None:
    # Refused before any database is opened.
    settings = load_settings(database=sqlite_db(), api_database=sqlite_db())
    with pytest.raises(BadInput, match=message):
        call(settings)


# -- desync helpers -------------------------------------------------------------------------------


def test_desync_helpers_do_what_they_say(cloud: Cloud) -> None:
    populate_placement(cloud.settings)
    healthy = placement_allocations(cloud)
    gens = generations(cloud)
    cell1 = cloud.cells["cell1"]

    # A restored cell: new node uuids, same names, instances untouched; Placement unchanged.
    nodes_sql = "SELECT id, uuid, hypervisor_hostname FROM compute_nodes WHERE deleted = 0"
    instances_sql = "SELECT uuid, host, node, compute_id FROM instances ORDER BY id"
    nodes_before = {int(i): (str(u), str(n)) for i, u, n in cloud.rows(cell1, nodes_sql)}
    instances_before = cloud.rows(cell1, instances_sql)
    renamed = restore_cell_with_new_uuids(cell1, 0.6, seed=3)
    assert len(renamed) == 3
    assert set(renamed) <= {u for u, _ in nodes_before.values()}
    nodes_after = {int(i): (str(u), str(n)) for i, u, n in cloud.rows(cell1, nodes_sql)}
    for i, (old, name) in nodes_before.items():
        assert nodes_after[i] == (renamed.get(old, old), name)
    assert cloud.rows(cell1, instances_sql) == instances_before
    providers = {
        str(u) for u, _ in cloud.rows(cloud.placement, "SELECT uuid, name FROM resource_providers")
    }
    assert set(renamed) <= providers and not set(renamed.values()) & providers
    assert placement_allocations(cloud) == healthy and generations(cloud) == gens
    with pytest.raises(BadInput):
        restore_cell_with_new_uuids(cell1, 1.5)

    # Allocations lost: chosen among live instances, consumers gone, providers bumped once.
    dropped = drop_allocations(cloud.settings, 5, seed=1)
    assert len(dropped.consumers) == 5 and set(dropped.consumers) <= set(healthy)
    assert dropped.allocations == sum(
        len(r) for u in dropped.consumers for r in healthy[u].values()
    )
    assert dropped.providers == tuple(sorted({p for u in dropped.consumers for p in healthy[u]}))
    after = placement_allocations(cloud)
    assert after == {u: a for u, a in healthy.items() if u not in dropped.consumers}
    assert not set(dropped.consumers) & set(consumers(cloud))
    bumped = generations(cloud)
    assert bumped == {u: g + (u in dropped.providers) for u, g in gens.items()}
    via_engine = drop_allocations(cloud.placement, 2, seed=2)
    assert len(via_engine.consumers) == 2 and not set(via_engine.consumers) & set(
        dropped.consumers
    )

    # Orphans: new consumers that are no instance or migration, on existing providers.
    before = placement_allocations(cloud)
    gens = generations(cloud)
    orphans = add_orphan_allocations(cloud.placement, 4, seed=9)
    assert len(orphans.consumers) == 4
    known: set[str] = set()
    for engine in cloud.cells.values():
        known |= {str(r[0]) for r in cloud.rows(engine, "SELECT uuid FROM instances")}
        known |= {str(r[0]) for r in cloud.rows(engine, "SELECT uuid FROM migrations")}
    assert not set(orphans.consumers) & known
    after = placement_allocations(cloud)
    assert {u: a for u, a in after.items() if u not in orphans.consumers} == before
    for u in orphans.consumers:
        (resources,) = after[u].values()
        assert resources == ORPHAN_RESOURCES
    assert {p for u in orphans.consumers for p in after[u]} == set(orphans.providers)
    assert orphans.allocations == 4 * len(ORPHAN_RESOURCES)
    owners = consumers(cloud)
    assert all(owners[u] == (ORPHAN_PROJECT, ORPHAN_USER, None, 1) for u in orphans.consumers)
    assert generations(cloud) == {u: g + (u in orphans.providers) for u, g in gens.items()}
