"""The generation contract novadb keeps with placement-api, operation by operation.

Placement guards its writes with generations: a writer reads a provider's
(or consumer's) generation, and its write lands only if a compare-and-swap on
that generation still matches.  novadb's Placement writers keep this
contract, not Placement's counts (Placement bumps a provider once per
consumer PUT or aggregate added, novadb once per batch):

* every change of a provider's allocations or aggregates changes its
  generation, and every change of a consumer's allocations changes the
  consumer's, so a placement-api request that read them before novadb wrote
  fails its compare-and-swap (409) and re-reads;
* a placement-api write that lands between novadb's read and its write makes
  novadb's batch fail its own compare-and-swap, roll back and be redone from
  a fresh read: neither write is lost.

Each operation is checked on what it actually changed (rows before and after),
for heal-allocations (create, owner update, --force moving allocations),
sync-aggregates and placement-audit --delete (which Placement itself would
not bump for: removing allocations moves no generation in Placement 16).
"""

from __future__ import annotations

import functools
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from novadb.errors import NovaDbError
from novadb.placement import aggregates as aggregates_module
from novadb.placement import audit as audit_module
from novadb.placement import heal as heal_module
from novadb.placement.aggregates import sync_aggregates
from novadb.placement.audit import placement_audit
from novadb.placement.db import (
    ConcurrentUpdate,
    PlacementTables,
    bump_generations,
    utcnow,
    write,
)
from novadb.placement.heal import HealOptions, heal_allocations
from novadb.sample.placement import add_orphan_allocations, drop_allocations, populate_placement
from sqlalchemy.engine import Connection

from tests.integration.clouds import (
    Cloud,
    build,
    expected_allocations,
    live_nodes,
    memberships,
    placement_allocations,
)

Snapshot = dict[str, tuple[frozenset[Any], int]]  # uuid -> (what it holds, generation)


def providers(c: Cloud) -> Snapshot:
    """Provider uuid -> (its allocations and aggregate memberships, its generation)."""
    held: dict[str, set[Any]] = defaultdict(set)
    for rp, consumer, rc, used in c.rows(
        c.placement,
        "SELECT rp.uuid, a.consumer_id, a.resource_class_id, a.used FROM allocations a "
        "JOIN resource_providers rp ON rp.id = a.resource_provider_id",
    ):
        held[str(rp)].add(("allocation", str(consumer), int(rc), int(used)))
    for rp, agg in c.rows(
        c.placement,
        "SELECT rp.uuid, pa.uuid FROM resource_provider_aggregates m "
        "JOIN resource_providers rp ON rp.id = m.resource_provider_id "
        "JOIN placement_aggregates pa ON pa.id = m.aggregate_id",
    ):
        held[str(rp)].add(("aggregate", str(agg)))
    return {
        str(u): (frozenset(held[str(u)]), int(g))
        for u, g in c.rows(c.placement, "SELECT uuid, generation FROM resource_providers")
    }


def consumers(c: Cloud) -> Snapshot:
    """Consumer uuid -> (its allocations, its generation)."""
    held: dict[str, set[Any]] = defaultdict(set)
    for consumer, rp, rc, used in c.rows(
        c.placement,
        "SELECT consumer_id, resource_provider_id, resource_class_id, used FROM allocations",
    ):
        held[str(consumer)].add((int(rp), int(rc), int(used)))
    return {
        str(u): (frozenset(held[str(u)]), int(g))
        for u, g in c.rows(c.placement, "SELECT uuid, generation FROM consumers")
    }


def stale_swaps(c: Cloud, table: str, before: Snapshot, uuids: set[str]) -> dict[str, int]:
    """What placement-api's compare-and-swap with the generations read ``before`` matches.

    Run in a transaction that is rolled back: the rows matched per uuid (1: the
    stale write would land, 0: it gets 409).
    """
    matched = {}
    with c.placement.connect() as conn, conn.begin() as tx:
        for u in sorted(uuids):
            matched[u] = conn.execute(
                sa.text(
                    f"UPDATE {table} SET generation = :g + 1 WHERE uuid = :u AND generation = :g"
                ),
                {"g": before[u][1], "u": u},
            ).rowcount
        tx.rollback()
    return matched


def changed(before: Snapshot, after: Snapshot) -> set[str]:
    return {u for u in before.keys() & after.keys() if before[u][0] != after[u][0]}


def moved(before: Snapshot, after: Snapshot) -> set[str]:
    return {u for u in before.keys() & after.keys() if before[u][1] != after[u][1]}


def _heal_desync(c: Cloud) -> Callable[[], Any]:
    """Lost allocations, one consumer under another owner: heal creates and updates."""
    drop_allocations(c.settings, 6, seed=11)
    want, _ = expected_allocations(c)
    owned = sorted(u for u in want if u in placement_allocations(c))[0]
    c.run(c.placement, "INSERT INTO projects (external_id) VALUES ('someone-else')")
    c.run(
        c.placement,
        "UPDATE consumers SET project_id = (SELECT id FROM projects WHERE external_id = "
        "'someone-else') WHERE uuid = :u",
        u=owned,
    )
    return lambda: heal_allocations(c.settings, HealOptions(batch_size=4))


def _force_desync(c: Cloud) -> Callable[[], Any]:
    """An instance's allocations on the wrong provider: --force moves them back."""
    want, _ = expected_allocations(c)
    victim = sorted(want)[0]
    right = next(iter(want[victim]))
    wrong = next(u for u in live_nodes(c) if u != right)
    c.run(
        c.placement,
        "UPDATE allocations SET resource_provider_id = "
        "(SELECT id FROM resource_providers WHERE uuid = :w) WHERE consumer_id = :c",
        w=wrong,
        c=victim,
    )
    return lambda: heal_allocations(c.settings, HealOptions(instance=victim, force=True))


def _aggregates_desync(c: Cloud) -> Callable[[], Any]:
    """Memberships lost: sync-aggregates adds them back."""
    c.run(c.placement, "DELETE FROM resource_provider_aggregates")
    return lambda: sync_aggregates(c.settings)


def _audit_desync(c: Cloud) -> Callable[[], Any]:
    """Orphan allocations: audit --delete removes them (Placement would bump nothing)."""
    add_orphan_allocations(c.placement, 4, seed=12)
    return lambda: placement_audit(c.settings, delete=True)


OPERATIONS = {
    "heal": _heal_desync,
    "heal-force": _force_desync,
    "sync-aggregates": _aggregates_desync,
    "audit-delete": _audit_desync,
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_a_placement_writer_that_read_before_novadb_wrote_gets_409(
    placement_lite: Cloud, operation: str
) -> None:
    """Every provider and consumer whose holdings changed has a new generation."""
    c = placement_lite
    run = OPERATIONS[operation](c)
    rp_before, consumers_before = providers(c), consumers(c)
    run()
    rp_after, consumers_after = providers(c), consumers(c)

    rp_changed = changed(rp_before, rp_after)
    assert rp_changed, "the desync gave the operation nothing to change"
    assert rp_changed <= moved(rp_before, rp_after)
    assert set(stale_swaps(c, "resource_providers", rp_before, rp_changed).values()) == {0}
    # Consumers: those still there whose allocations changed (those gone were deleted).
    c_changed = changed(consumers_before, consumers_after)
    assert c_changed <= moved(consumers_before, consumers_after)
    assert set(stale_swaps(c, "consumers", consumers_before, c_changed).values()) <= {0}


@pytest.fixture
def mariadb_cloud(mysql_dbs: Callable[[], str]) -> Iterator[Cloud]:
    """The lite cloud on MariaDB: two writers really run at once there (SQLite serialises)."""
    c = build(mysql_dbs, {"cell1": (40, 3)})
    populate_placement(c.settings, aggregates=1, seed=4)
    yield c
    c.close()


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_a_placement_write_between_novadb_read_and_write_is_kept(
    mariadb_cloud: Cloud, operation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """placement-api changes a provider novadb is about to swap: novadb redoes its batch.

    The racing write commits after novadb read the generations and before its
    compare-and-swap; the swap fails, the batch rolls back and is redone from
    a fresh read, and both writes are in Placement at the end.
    """
    c = mariadb_cloud
    run = OPERATIONS[operation](c)
    tables = PlacementTables(c.placement)
    module = {
        "heal": heal_module,
        "heal-force": heal_module,
        "sync-aggregates": aggregates_module,
        "audit-delete": audit_module,
    }[operation]
    # The racer is placement-api setting a trait on the provider novadb is about
    # to swap: a write that bumps the generation and touches no table novadb
    # writes.  (A racing allocation could wait on the row or gap locks
    # novadb's own batch holds, which the optimiser's choice of index decides,
    # until innodb_lock_wait_timeout: the racer must commit while novadb
    # waits for it.)
    racer = "CUSTOM_NOVADB_RACER"
    raced: list[int] = []
    swaps: list[bool] = []
    racer_failed: list[BaseException] = []

    def set_trait(conn: Connection) -> None:
        rp_id = raced[0]
        generation = conn.execute(
            sa.select(tables.providers.c.generation).where(tables.providers.c.id == rp_id)
        ).scalar_one()
        conn.execute(sa.insert(tables.traits).values(name=racer, created_at=utcnow()))
        trait_id = conn.execute(
            sa.select(tables.traits.c.id).where(tables.traits.c.name == racer)
        ).scalar_one()
        conn.execute(
            sa.insert(tables.provider_traits).values(
                resource_provider_id=rp_id, trait_id=trait_id, created_at=utcnow()
            )
        )
        bump_generations(conn, tables.providers, {rp_id: generation})

    def placement_api() -> None:
        try:
            write(c.placement, set_trait)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            racer_failed.append(exc)

    def racing_bump(conn: Connection, table: sa.Table, expected: dict[int, int | None]) -> None:
        if table.name == "resource_providers" and not raced:
            raced.append(min(expected))
            other = threading.Thread(target=placement_api)
            other.start()
            other.join()
        try:
            bump_generations(conn, table, expected)
        except Exception:
            swaps.append(False)
            raise
        if table.name == "resource_providers":
            swaps.append(True)

    monkeypatch.setattr(module, "bump_generations", racing_bump)
    before = providers(c)
    result = run()
    after = providers(c)
    (rp_id,) = raced
    (rp_uuid,) = [str(u) for (u,) in c.rows(
        c.placement, "SELECT uuid FROM resource_providers WHERE id = :i", i=rp_id)]  # fmt: skip
    assert racer_failed == []
    # novadb's first swap lost to the racer, its redo won.
    assert swaps[0] is False and swaps[-1] is True
    # Both writes are there: the racer's trait, and the operation's own work.
    holders = c.rows(
        c.placement,
        "SELECT rp.uuid FROM resource_provider_traits m JOIN traits t ON t.id = m.trait_id "
        "JOIN resource_providers rp ON rp.id = m.resource_provider_id WHERE t.name = :n",
        n=racer,
    )
    assert [str(u) for (u,) in holders] == [rp_uuid]
    # The racer's bump, then novadb's (heal's later batches may bump the provider again).
    assert after[rp_uuid][1] >= before[rp_uuid][1] + 2
    if operation.startswith("heal"):
        want, _ = expected_allocations(c)
        got = placement_allocations(c)
        assert got == want
        assert result.failed == []
    elif operation == "sync-aggregates":
        assert after[rp_uuid][1] == before[rp_uuid][1] + 2
        # The lite cloud's one aggregate holds every host: every node is back in it.
        assert result.exit_code == 0
        assert {p for _, p in memberships(c)} == set(live_nodes(c))
    else:
        assert after[rp_uuid][1] == before[rp_uuid][1] + 2
        assert result.deleted_consumers == 4


def test_audit_delete_that_keeps_losing_deletes_nothing_and_exits_1(
    placement_lite: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Placement changing under every attempt: nova-manage's 1, and every orphan still there."""
    c = placement_lite
    orphans = add_orphan_allocations(c.placement, 3, seed=13)
    before = placement_allocations(c)

    def always_lost(conn: Connection, table: sa.Table, expected: dict[int, int | None]) -> None:
        raise ConcurrentUpdate(f"{table.name}: 1 of 1 rows changed under us")

    monkeypatch.setattr(audit_module, "bump_generations", always_lost)
    monkeypatch.setattr(audit_module, "write", functools.partial(write, attempts=2))
    with pytest.raises(NovaDbError, match="placement-audit --delete deleted nothing") as err:
        placement_audit(c.settings, delete=True)
    assert err.value.exit_code == 1
    assert placement_allocations(c) == before
    assert set(orphans.consumers) <= set(before)
