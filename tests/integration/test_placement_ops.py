"""placement-audit, heal-allocations and sync-aggregates on a populated multi-cell cloud.

Every cloud starts as Nova would leave it (``sample_placement.populate_placement``),
then a desync is made by hand and the operation must find or fix exactly it.
"""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from novadb.cli import main as cli
from novadb.errors import BadInput, LockTimeout
from novadb.locking import database_lock
from novadb.placement import db as placement_db
from novadb.placement.aggregates import TooManyComputes, sync_aggregates
from novadb.placement.audit import UnknownProvider, placement_audit
from novadb.placement.heal import HealOptions, heal_allocations
from novadb.placement.rebuild import rebuild_placement
from novadb.progress import Event
from novadb.sample.placement import (
    add_orphan_allocations,
    drop_allocations,
    restore_cell_with_new_uuids,
)

from tests.integration.clouds import (
    Cloud,
    consumers,
    expected_allocations,
    generations,
    live_nodes,
    make_special,
    memberships,
    placement_allocations,
)


def flavor_with(c: Cloud, instance: str, **specs: str) -> None:
    """Give one instance's embedded flavor extra specs."""
    engine = c.cells["cell1"]
    (text,) = c.rows(
        engine, "SELECT flavor FROM instance_extra WHERE instance_uuid = :u", u=instance
    )[0]
    doc = json.loads(text)
    doc["cur"]["nova_object.data"]["extra_specs"].update(specs)
    c.run(
        engine,
        "UPDATE instance_extra SET flavor = :f WHERE instance_uuid = :u",
        f=json.dumps(doc),
        u=instance,
    )


def live_instances(c: Cloud, cell: str = "cell1") -> list[str]:
    sql = "SELECT uuid FROM instances WHERE deleted = 0 AND host IS NOT NULL ORDER BY id"
    return [str(r[0]) for r in c.rows(c.cells[cell], sql)]


# -- placement-audit -----------------------------------------------------------------------------


def test_a_healthy_cloud_audits_clean(placement_cloud: Cloud) -> None:
    cloud = placement_cloud
    result = placement_audit(cloud.settings)
    assert result.findings == []
    assert result.exit_code == 0
    assert (result.compute_nodes, result.providers) == (6, 6)


def test_restored_cell_shows_the_409_name_conflicts(placement_cloud: Cloud) -> None:
    cloud = placement_cloud
    before = {u: n for u, (_, _, n) in live_nodes(cloud).items()}
    changed = restore_cell_with_new_uuids(cloud.cells["cell1"], fraction=1.0, seed=1)
    result = placement_audit(cloud.settings)
    conflicts = {(f.provider, f.name) for f in result.findings if f.kind == "name-conflict"}
    assert conflicts == {(old, before[old]) for old in changed}
    assert result.count("missing-provider") == 0
    assert result.count("stale-provider") == 0  # the old providers are reported as conflicts
    # Their allocations belong to providers Nova no longer knows: not judged as orphans.
    assert result.count("orphan-allocation") == 0
    assert result.exit_code == 3
    assert all(f.fix == "novadb rebuild-placement" for f in result.findings)


def test_orphans_are_found_and_deleted_with_generations_bumped(placement_cloud: Cloud) -> None:
    cloud = placement_cloud
    desync = add_orphan_allocations(cloud.placement, 5, seed=2)
    before_gens = generations(cloud)
    found = placement_audit(cloud.settings)
    assert {f.consumer for f in found.findings} == set(desync.consumers)
    assert {f.kind for f in found.findings} == {"orphan-allocation"}
    assert found.exit_code == 3
    assert set(consumers(cloud)) >= set(desync.consumers)

    deleted = placement_audit(cloud.settings, delete=True)
    assert deleted.exit_code == 4
    assert (deleted.deleted_consumers, deleted.deleted_allocations) == (5, 10)
    assert not set(placement_allocations(cloud)) & set(desync.consumers)
    assert not set(consumers(cloud)) & set(desync.consumers)  # emptied consumers dropped
    after_gens = generations(cloud)
    for provider, gen in before_gens.items():
        bumped = 1 if provider in desync.providers else 0
        assert after_gens[provider] == gen + bumped
    assert placement_audit(cloud.settings).exit_code == 0


def test_audit_one_provider_and_an_unknown_one(placement_lite: Cloud) -> None:
    lite = placement_lite
    desync = add_orphan_allocations(lite.placement, 6, seed=9)
    target = sorted(desync.providers)[0]
    result = placement_audit(lite.settings, resource_provider=target)
    assert result.findings and {f.provider for f in result.findings} == {target}
    assert result.count("orphan-allocation") < 6
    missing = str(uuid.uuid4())
    with pytest.raises(UnknownProvider, match=f"Resource provider with UUID {missing}") as err:
        placement_audit(lite.settings, resource_provider=missing)
    assert err.value.exit_code == 127


def test_inventory_missing_and_stale_providers(placement_lite: Cloud) -> None:
    lite = placement_lite
    nodes = sorted(live_nodes(lite))
    lite.run(lite.cells["cell1"], "UPDATE compute_nodes SET vcpus = 7 WHERE uuid = :u", u=nodes[0])
    drop_allocations(lite.settings, 1000, seed=1)  # a provider can only go once it is empty
    lite.run(
        lite.placement,
        "DELETE FROM resource_provider_aggregates WHERE resource_provider_id IN "
        "(SELECT id FROM resource_providers WHERE uuid = :u)",
        u=nodes[1],
    )
    lite.run(
        lite.placement,
        "DELETE FROM inventories WHERE resource_provider_id IN "
        "(SELECT id FROM resource_providers WHERE uuid = :u)",
        u=nodes[1],
    )
    lite.run(lite.placement, "DELETE FROM resource_providers WHERE uuid = :u", u=nodes[1])
    stale = str(uuid.uuid4())
    lite.run(
        lite.placement,
        "INSERT INTO resource_providers (uuid, name, generation) VALUES (:u, 'gone-host', 0)",
        u=stale,
    )
    result = placement_audit(lite.settings)
    kinds = sorted((f.kind, f.provider) for f in result.findings)
    assert kinds == sorted(
        [
            ("inventory-mismatch", nodes[0]),
            ("missing-provider", nodes[1]),
            ("stale-provider", stale),
        ]
    )
    mismatch = next(f for f in result.findings if f.kind == "inventory-mismatch")
    assert mismatch.detail == "VCPU total 64 != 7"


# -- heal-allocations ----------------------------------------------------------------------------


def test_heal_recreates_exactly_the_lost_allocations(placement_cloud: Cloud) -> None:
    cloud = placement_cloud
    want, owners = expected_allocations(cloud)
    desync = drop_allocations(cloud.settings, 40, seed=5)
    lost = set(desync.consumers)
    assert len(lost) == 40 and not lost & set(placement_allocations(cloud))

    dry = heal_allocations(cloud.settings, HealOptions(dry_run=True, batch_size=16))
    assert {h.instance for h in dry.healed} == lost
    assert dry.exit_code == 4
    assert not lost & set(placement_allocations(cloud))  # dry run wrote nothing

    before = generations(cloud)
    result = heal_allocations(cloud.settings, HealOptions(batch_size=16))
    assert result.exit_code == 0
    assert {h.instance for h in result.healed} == lost
    assert all(h.action == "create" for h in result.healed)
    assert placement_allocations(cloud) == want
    made = consumers(cloud)
    for instance in lost:
        assert made[instance] == (*owners[instance], None, 1)  # untyped, as Nova 34 writes
    after = generations(cloud)
    touched = {next(iter(want[i])) for i in lost}
    assert {p for p in after if after[p] != before[p]} == touched
    assert all(after[p] > before[p] for p in touched)

    again = heal_allocations(cloud.settings)
    assert (again.exit_code, again.processed, again.up_to_date) == (4, 0, len(want))


def test_heal_skips_and_refuses_what_nova_does(placement_lite: Cloud) -> None:
    lite = placement_lite
    cases = make_special(lite)
    want, _ = expected_allocations(lite)
    drop_allocations(lite.settings, 1000, seed=2)
    vgpu, ok = live_instances(lite)[10], live_instances(lite)[11]
    flavor_with(lite, vgpu, **{"resources:VGPU": "1"})
    result = heal_allocations(lite.settings)
    skipped = {s.instance: s.reason for s in result.skipped}
    for instance in cases["task_state"]:
        assert skipped[instance] == (
            f"Instance {instance} is undergoing a task state transition: rebooting"
        )
    for instance in cases["not_on_host"]:
        assert skipped[instance] == f"Instance {instance} is not on a host."
    assert [(f.instance, f.code) for f in result.failed] == [(vgpu, 8)]
    assert result.exit_code == 8
    healed = {h.instance for h in result.healed}
    assert ok in healed and vgpu not in healed
    # Boot from volume: no root disk in DISK_GB.
    got = placement_allocations(lite)
    for instance in cases["volume_root"] + cases["no_image"]:
        assert got[instance] == want[instance]


def test_heal_max_count_and_missing_compute_node(placement_lite: Cloud) -> None:
    lite = placement_lite
    drop_allocations(lite.settings, 10, seed=3)
    first = heal_allocations(lite.settings, HealOptions(max_count=4, batch_size=3))
    assert (first.exit_code, first.processed, first.max_count_reached) == (1, 4, True)
    victim = live_instances(lite)[0]
    drop_allocations(lite.placement, 0)  # no-op: the helper accepts an engine too
    lite.run(lite.placement, "DELETE FROM allocations WHERE consumer_id = :u", u=victim)
    lite.run(
        lite.cells["cell1"], "UPDATE instances SET node = 'nowhere' WHERE uuid = :u", u=victim
    )
    rest = heal_allocations(lite.settings)
    assert rest.processed == 6
    assert [(f.instance, f.code) for f in rest.failed] == [(victim, 2)]
    assert rest.exit_code == 2


def test_heal_fixes_owner_and_force_rewrites(placement_lite: Cloud) -> None:
    lite = placement_lite
    want, owners = expected_allocations(lite)
    a, b = live_instances(lite)[0], live_instances(lite)[1]
    lite.run(lite.placement, "INSERT INTO projects (external_id) VALUES ('someone-else')")
    lite.run(
        lite.placement,
        "UPDATE consumers SET project_id = (SELECT id FROM projects WHERE external_id = "
        "'someone-else') WHERE uuid = :u",
        u=a,
    )
    lite.run(lite.placement, "UPDATE allocations SET used = 999 WHERE consumer_id = :u", u=b)
    result = heal_allocations(lite.settings)
    assert [(h.instance, h.action) for h in result.healed] == [(a, "update")]
    assert consumers(lite)[a][:2] == owners[a]
    assert consumers(lite)[a][3] == 2
    assert placement_allocations(lite)[b] != want[b]  # not healed without --force

    forced = heal_allocations(lite.settings, HealOptions(instance=b, force=True))
    assert [(h.instance, h.action) for h in forced.healed] == [(b, "force")]
    assert placement_allocations(lite) == want


def test_heal_one_instance_exits_as_nova_manage_does(
    placement_lite: Cloud, capsys: pytest.CaptureFixture[str]
) -> None:
    """--instance: 0 healed, 4 nothing to heal, with or without --force; never "max count"."""
    lite = placement_lite
    cases = make_special(lite)
    want, owners = expected_allocations(lite)
    lost = live_instances(lite)[-1]
    lite.run(lite.placement, "DELETE FROM allocations WHERE consumer_id = :u", u=lost)
    lite.run(lite.placement, "DELETE FROM consumers WHERE uuid = :u", u=lost)

    healed = heal_allocations(lite.settings, HealOptions(instance=lost))
    assert (healed.exit_code, healed.processed, healed.max_count_reached) == (0, 1, False)
    assert placement_allocations(lite)[lost] == want[lost]
    up_to_date = heal_allocations(lite.settings, HealOptions(instance=lost))
    assert (up_to_date.exit_code, up_to_date.processed, up_to_date.up_to_date) == (4, 0, 1)
    forced = heal_allocations(lite.settings, HealOptions(instance=lost, force=True))
    assert (forced.exit_code, [h.action for h in forced.healed]) == (0, ["force"])
    assert forced.max_count_reached is False
    busy = cases["task_state"][0]  # skipped: nothing healed
    skipped = heal_allocations(lite.settings, HealOptions(instance=busy, force=True))
    assert (skipped.exit_code, len(skipped.skipped)) == (4, 1)
    # nova-manage ignores --max-count with --instance (here a value it would refuse).
    ignored = heal_allocations(lite.settings, HealOptions(instance=lost, max_count=0))
    assert ignored.exit_code == 4
    assert placement_allocations(lite)[lost] == want[lost]

    # The CLI's last line is nova-manage's, without "Max count reached.".
    lite.run(lite.placement, "DELETE FROM allocations WHERE consumer_id = :u", u=lost)
    urls = ["--database", lite.settings.url("main"), "--api-database", lite.settings.url("api"),
            "--placement-database", lite.settings.url("placement")]  # fmt: skip
    assert cli.main([*urls, "heal-allocations", "--instance", lost, "--max-count", "x"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "Processed 1 instances."
    assert cli.main([*urls, "heal-allocations", "--instance", lost]) == 4
    assert capsys.readouterr().out.splitlines()[-1] == "Processed 0 instances."
    assert consumers(lite)[lost][:2] == owners[lost]


def test_heal_leaves_consumer_types_as_nova_manage_does(placement_lite: Cloud) -> None:
    """Nova 34 writes allocations below Placement microversion 1.38 and never reads types.

    A consumer heal creates has no type; one it updates (owner fixed, or
    rewritten by --force) keeps the type it had; no consumer_types row is made.
    """
    lite = placement_lite
    want, owners = expected_allocations(lite)
    fresh, owned, forced = [u for u in live_instances(lite) if u in want][:3]
    lite.run(lite.placement, "INSERT INTO consumer_types (id, name) VALUES (7, 'INSTANCE')")
    lite.run(lite.placement, "INSERT INTO projects (external_id) VALUES ('someone-else')")
    lite.run(
        lite.placement,
        "UPDATE consumers SET consumer_type_id = 7, project_id = (SELECT id FROM projects "
        "WHERE external_id = 'someone-else') WHERE uuid = :u",
        u=owned,
    )
    lite.run(lite.placement, "DELETE FROM allocations WHERE consumer_id = :u", u=fresh)
    lite.run(lite.placement, "DELETE FROM consumers WHERE uuid = :u", u=fresh)

    result = heal_allocations(lite.settings)
    assert {(h.instance, h.action) for h in result.healed} == {
        (fresh, "create"),
        (owned, "update"),
    }, result.failed
    lite.run(lite.placement, "UPDATE consumers SET consumer_type_id = 7 WHERE uuid = :u", u=forced)
    lite.run(lite.placement, "UPDATE allocations SET used = 2 WHERE consumer_id = :u", u=forced)
    again = heal_allocations(lite.settings, HealOptions(instance=forced, force=True))
    assert [(h.instance, h.action) for h in again.healed] == [(forced, "force")]
    assert placement_allocations(lite) == want
    got = consumers(lite)
    assert (got[fresh], got[owned][:3], got[forced][:3]) == (
        (*owners[fresh], None, 1),
        (*owners[owned], "INSTANCE"),
        (*owners[forced], "INSTANCE"),
    )
    assert lite.rows(lite.placement, "SELECT id, name FROM consumer_types") == [(7, "INSTANCE")]


def test_heal_refuses_what_placement_would(placement_lite: Cloud) -> None:
    lite = placement_lite
    victim = live_instances(lite)[0]
    provider = next(iter(expected_allocations(lite)[0][victim]))
    lite.run(lite.placement, "DELETE FROM allocations WHERE consumer_id = :u", u=victim)
    lite.run(
        lite.placement,
        "UPDATE inventories SET total = 1, max_unit = 1 WHERE resource_provider_id = "
        "(SELECT id FROM resource_providers WHERE uuid = :p) AND resource_class_id = 1",
        p=provider,
    )
    result = heal_allocations(lite.settings)
    assert [(f.instance, f.code) for f in result.failed] == [(victim, 3)]
    assert "MEMORY_MB" in result.failed[0].reason
    assert victim not in placement_allocations(lite)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (HealOptions(cell="x", instance="y"), "mutually exclusive"),
        (HealOptions(force=True), "--instance flag is required"),
        (HealOptions(max_count=0), "positive integer for --max-count"),
        (HealOptions(cell="00000000-0000-0000-0000-00000000abcd"), "Cell with uuid"),
        (HealOptions(instance="00000000-0000-0000-0000-00000000abcd"), "is it mapped?"),
    ],
)
def test_heal_bad_input_is_127(placement_lite: Cloud, options: HealOptions, message: str) -> None:
    lite = placement_lite
    with pytest.raises(BadInput, match=message) as err:
        heal_allocations(lite.settings, options)
    assert err.value.exit_code == 127


# -- sync-aggregates -----------------------------------------------------------------------------


def test_sync_aggregates_adds_back_exactly_what_is_missing(placement_cloud: Cloud) -> None:
    cloud = placement_cloud
    full = memberships(cloud)
    assert full
    cloud.run(cloud.placement, "DELETE FROM resource_provider_aggregates")
    cloud.run(cloud.placement, "DELETE FROM placement_aggregates")
    before = generations(cloud)
    dry = sync_aggregates(cloud.settings, dry_run=True)
    assert len(dry.added) == len(full) and memberships(cloud) == set()
    result = sync_aggregates(cloud.settings)
    assert result.exit_code == 0
    assert memberships(cloud) == full
    after = generations(cloud)
    assert {p for p in after if after[p] == before[p] + 1} == {p for _, p in full}
    again = sync_aggregates(cloud.settings)
    assert (again.added, again.already) == ([], len(full))


def test_sync_aggregates_reports_what_it_cannot_resolve(
    placement_lite: Cloud, capsys: pytest.CaptureFixture[str]
) -> None:
    lite = placement_lite
    hosts = [
        str(r[0]) for r in lite.rows(lite.api, "SELECT host FROM host_mappings ORDER BY host")
    ]
    agg = int(lite.rows(lite.api, "SELECT id FROM aggregates ORDER BY id")[0][0])
    lite.run(
        lite.api,
        "INSERT INTO aggregate_hosts (host, aggregate_id) VALUES ('unmapped-host', :a)",
        a=agg,
    )
    assert sync_aggregates(lite.settings).exit_code == 4
    lite.run(
        lite.cells["cell1"], "UPDATE compute_nodes SET deleted = id WHERE host = :h", h=hosts[0]
    )
    result = sync_aggregates(lite.settings)
    assert (result.unmapped_hosts, result.missing_nodes) == (["unmapped-host"], [hosts[0]])
    assert result.exit_code == 5
    node = str(
        lite.rows(lite.cells["cell1"], "SELECT uuid FROM compute_nodes WHERE host = :h AND "
                  "deleted = 0", h=hosts[1])[0][0]
    )  # fmt: skip
    lite.run(lite.placement, "UPDATE resource_providers SET uuid = :n WHERE uuid = :u",
             n=str(uuid.uuid4()), u=node)  # fmt: skip
    # nova-manage 34 stops at such a host with 2 ("Failed to get aggregates ..."); novadb
    # adds every other membership first, and exits 2 as well (over 4 and 5).
    full = memberships(lite)
    lite.run(lite.placement, "DELETE FROM resource_provider_aggregates")
    result = sync_aggregates(lite.settings)
    assert result.missing_providers == [(hosts[1], node)]
    assert result.exit_code == 2
    others = {n for n, (_, h, _) in live_nodes(lite).items() if h not in hosts[:2]}
    assert others and memberships(lite) == {(a, p) for a, p in full if p in others}
    assert {h for _, h, _ in result.added} == set(hosts[2:])
    urls = ["--database", lite.settings.url("main"), "--api-database", lite.settings.url("api"),
            "--placement-database", lite.settings.url("placement")]  # fmt: skip
    assert cli.main([*urls, "sync-aggregates"]) == 2
    out = capsys.readouterr().out
    assert f"Failed to get aggregates for resource provider with UUID {node}\n" in out
    assert f"Missing: {hosts[0]}" in out and "Missing: unmapped-host" in out


def test_sync_aggregates_stops_on_a_host_with_two_nodes(placement_lite: Cloud) -> None:
    lite = placement_lite
    host, node = lite.rows(
        lite.cells["cell1"],
        "SELECT host, hypervisor_hostname FROM compute_nodes WHERE deleted = 0",
    )[0]
    lite.run(
        lite.cells["cell1"],
        "INSERT INTO compute_nodes (host, hypervisor_hostname, uuid, vcpus, memory_mb, local_gb, "
        "vcpus_used, memory_mb_used, local_gb_used, hypervisor_type, hypervisor_version, "
        "cpu_info, deleted) VALUES (:h, :n, :u, 1, 1, 1, 0, 0, 0, 'ironic', 1, '{}', 0)",
        h=host,
        n=f"{node}-2",
        u=str(uuid.uuid4()),
    )
    member = lite.rows(lite.api, "SELECT COUNT(*) FROM aggregate_hosts WHERE host = :h", h=host)
    assert member[0][0] == 1  # every host of the lite cloud is in its one aggregate
    with pytest.raises(TooManyComputes, match=f"for host {host}") as err:
        sync_aggregates(lite.settings)
    assert err.value.exit_code == 1


def test_heal_stops_after_the_batch_in_progress(placement_lite: Cloud) -> None:
    lite = placement_lite
    drop_allocations(lite.settings, 20, seed=6)
    stop = threading.Event()

    def on_event(event: Event) -> None:
        if event.kind == "batch":
            stop.set()  # Ctrl-C during the first batch

    first = heal_allocations(
        lite.settings, HealOptions(batch_size=10), progress=on_event, stop=stop
    )
    assert first.stopped == "interrupted"
    assert 0 < first.processed < 20
    rest = heal_allocations(lite.settings)
    assert rest.processed == 20 - first.processed
    assert rest.stopped is None


def test_force_moves_allocations_off_a_wrong_provider_and_bumps_both(
    placement_lite: Cloud,
) -> None:
    lite = placement_lite
    want, _ = expected_allocations(lite)
    victim = next(iter(want))
    right = next(iter(want[victim]))
    wrong = next(u for u in live_nodes(lite) if u != right)
    lite.run(
        lite.placement,
        "UPDATE allocations SET resource_provider_id = "
        "(SELECT id FROM resource_providers WHERE uuid = :w) WHERE consumer_id = :c",
        w=wrong,
        c=victim,
    )
    before = generations(lite)
    result = heal_allocations(lite.settings, HealOptions(instance=victim, force=True))
    assert [(h.instance, h.action) for h in result.healed] == [(victim, "force")]
    assert placement_allocations(lite)[victim] == want[victim]
    after = generations(lite)
    assert {p for p in after if after[p] != before[p]} == {right, wrong}
    assert all(after[p] == before[p] + 1 for p in (right, wrong))


def test_two_placement_writers_never_interleave(
    placement_lite: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one novadb writer holds Placement, another waits, then fails clearly."""
    lite = placement_lite
    monkeypatch.setattr(placement_db, "WRITER_LOCK_TIMEOUT", 0.5)
    drop_allocations(lite.settings, 3, seed=8)
    with database_lock(lite.placement, placement_db.WRITER_LOCK):
        for run in (
            lambda: heal_allocations(lite.settings),
            lambda: sync_aggregates(lite.settings),
            lambda: rebuild_placement(lite.settings, force=True),
        ):
            with pytest.raises(LockTimeout, match="another novadb placement-writes"):
                run()
        # Read-only runs do not wait.
        assert heal_allocations(lite.settings, HealOptions(dry_run=True)).processed == 3
        assert placement_audit(lite.settings).exit_code == 0
    assert heal_allocations(lite.settings).processed == 3
