"""The Placement actions under ops.testing (Scenario), on a real two-cell cloud in SQLite.

Each test gets its own copy (conftest's ``pcloud``) of a cloud that
``tests.integration.clouds.build`` made and ``populate_placement`` filled as a
healthy Nova would (see ``placement_cloud.py``), breaks Placement the way real
clouds break (``sample_placement``'s desync helpers), runs one action through
the charm class and compares its results key by key; then the databases are
inspected, because the results must say what happened to them.

rebuild-placement writes its backups under ``charm.BACKUP_DIR``
(/var/lib/novadb on a unit); conftest's ``backup_dir`` points it into each
test's own directory.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import ops
import pytest
from novadb.sample.placement import (
    ORPHAN_RESOURCES,
    add_orphan_allocations,
    drop_allocations,
    restore_cell_with_new_uuids,
)
from ops import testing

from tests.charm.placement_cloud import CELLS, NODES, PlacementCloud
from tests.charm.test_actions import AT_HEAD, context, results, run_action, state_after
from tests.integration.clouds import (
    expected_allocations,
    live_nodes,
    placement_allocations,
)

KINDS = ("inventory-mismatch", "missing-provider", "name-conflict", "orphan-allocation",
         "stale-provider")  # fmt: skip
ORPHAN_FIX = "juju run nova-cloud-controller/leader placement-audit delete=true"


# -- the cloud -------------------------------------------------------------------------------


def test_the_copy_is_a_healthy_cloud_of_its_own(pcloud: PlacementCloud) -> None:
    cells = pcloud.rows(pcloud.cloud.api, "SELECT name, database_connection FROM cell_mappings")
    assert {str(n): str(u) for n, u in cells} == {
        name: f"sqlite:///{pcloud.base / 'db' / name}.sqlite" for name in ("cell0", *CELLS)
    }
    assert len(live_nodes(pcloud.cloud)) == NODES
    assert placement_allocations(pcloud.cloud) == expected_allocations(pcloud.cloud)[0]


# -- expectations ----------------------------------------------------------------------------


def audit_counts(**found: int) -> dict[str, str]:
    """``found.<kind>`` for every kind, zero unless given."""
    return {f"found.{kind}": str(found.get(kind.replace("-", "_"), 0)) for kind in KINDS}


def provider_names(pcloud: PlacementCloud) -> dict[str, str]:
    sql = "SELECT uuid, name FROM resource_providers"
    return {str(u): str(n) for u, n in pcloud.rows(pcloud.cloud.placement, sql)}


def orphan_providers(pcloud: PlacementCloud, consumers: tuple[str, ...]) -> dict[str, str]:
    sql = (
        "SELECT DISTINCT a.consumer_id, rp.uuid FROM allocations a "
        "JOIN resource_providers rp ON rp.id = a.resource_provider_id"
    )
    got = {str(c): str(p) for c, p in pcloud.rows(pcloud.cloud.placement, sql)}
    return {c: got[c] for c in consumers}


# -- placement-audit -------------------------------------------------------------------------


def test_placement_audit_of_a_healthy_cloud(pcloud: PlacementCloud) -> None:
    before = pcloud.snapshot()
    ctx = context()
    out = run_action(ctx, pcloud.state(), "placement-audit")
    assert results(ctx) == {
        "exit-code": "0",
        "total": "0",
        "remaining": "0",
        "providers": str(NODES),
        "compute-nodes": str(NODES),
        "deleted.consumers": "0",
        "deleted.allocations": "0",
        **audit_counts(),
    }
    assert ctx.action_logs == ["reading 2 cell(s)", "comparing 5 providers"]
    assert out.unit_status == ops.ActiveStatus(AT_HEAD)
    assert pcloud.snapshot() == before


def test_placement_audit_finds_orphans_and_delete_removes_them(pcloud: PlacementCloud) -> None:
    desync = add_orphan_allocations(pcloud.cloud.placement, 3, seed=2)
    on = orphan_providers(pcloud, desync.consumers)
    names = provider_names(pcloud)
    held = ", ".join(sorted(ORPHAN_RESOURCES))
    before = pcloud.snapshot()
    ctx = context()

    run_action(ctx, pcloud.state(), "placement-audit")
    got = results(ctx)
    findings = {
        got[f"findings.{i:02d}.consumer"]: {
            k.split(".")[-1]: v for k, v in got.items() if k.startswith(f"findings.{i:02d}.")
        }
        for i in range(3)
    }
    assert findings == {
        c: {
            "kind": "orphan-allocation",
            "provider": on[c],
            "name": names[on[c]],
            "consumer": c,
            "detail": f"consumer {c} holds {held} but is no instance or in-progress "
            "migration on this node",
            "fix": ORPHAN_FIX,
        }
        for c in desync.consumers
    }
    assert {k: v for k, v in got.items() if not k.startswith("findings.")} == {
        "exit-code": "3",
        "total": "3",
        "remaining": "3",
        "providers": str(NODES),
        "compute-nodes": str(NODES),
        "deleted.consumers": "0",
        "deleted.allocations": "0",
        **audit_counts(orphan_allocation=3),
    }
    assert pcloud.snapshot() == before  # without delete, nothing changes

    run_action(ctx, pcloud.state(), "placement-audit", {"delete": True})
    got = results(ctx)
    assert {k: v for k, v in got.items() if not k.startswith("findings.")} == {
        "exit-code": "4",
        "total": "3",
        "remaining": "0",
        "providers": str(NODES),
        "compute-nodes": str(NODES),
        "deleted.consumers": "3",
        "deleted.allocations": str(3 * len(ORPHAN_RESOURCES)),
        **audit_counts(orphan_allocation=3),
    }
    assert ctx.action_logs[-1] == "deleting 3 orphans"
    assert not set(placement_allocations(pcloud.cloud)) & set(desync.consumers)
    assert placement_allocations(pcloud.cloud) == expected_allocations(pcloud.cloud)[0]

    run_action(ctx, pcloud.state(), "placement-audit")
    assert results(ctx)["exit-code"] == "0"


def test_placement_audit_of_one_provider(pcloud: PlacementCloud) -> None:
    desync = add_orphan_allocations(pcloud.cloud.placement, 6, seed=9)
    on = orphan_providers(pcloud, desync.consumers)
    target = sorted(desync.providers)[0]
    mine = sorted(c for c, p in on.items() if p == target)
    ctx = context()
    run_action(ctx, pcloud.state(), "placement-audit", {"resource-provider": target})
    got = results(ctx)
    assert got["total"] == got["found.orphan-allocation"] == str(len(mine))
    assert sorted(got[f"findings.{i:02d}.consumer"] for i in range(len(mine))) == mine
    assert {got[f"findings.{i:02d}.provider"] for i in range(len(mine))} == {target}


def test_placement_audit_shows_the_409_name_conflicts_of_a_restored_cell(
    pcloud: PlacementCloud,
) -> None:
    nodes = live_nodes(pcloud.cloud)
    changed = restore_cell_with_new_uuids(pcloud.cloud.cells["cell1"], fraction=1.0, seed=1)
    ctx = context()
    run_action(ctx, pcloud.state(), "placement-audit")
    got = results(ctx)
    assert {k: v for k, v in got.items() if not k.startswith("findings.")} == {
        "exit-code": "3",
        "total": "3",
        "remaining": "3",
        "providers": str(NODES),
        "compute-nodes": str(NODES),
        "deleted.consumers": "0",
        "deleted.allocations": "0",
        **audit_counts(name_conflict=3),
    }
    conflicts = {
        got[f"findings.{i:02d}.provider"]: (
            got[f"findings.{i:02d}.name"],
            got[f"findings.{i:02d}.fix"],
        )
        for i in range(3)
    }
    assert conflicts == {
        old: (nodes[old][2], "juju run nova-cloud-controller/leader rebuild-placement")
        for old in changed
    }
    for i in range(3):
        old = got[f"findings.{i:02d}.provider"]
        assert got[f"findings.{i:02d}.detail"] == (
            f"provider {old} holds the name of compute node {changed[old]} (cell1): "
            "nova-compute gets 409 creating its provider"
        )


# -- heal-allocations ------------------------------------------------------------------------


def test_heal_allocations_dry_run_then_heal(pcloud: PlacementCloud) -> None:
    want, _ = expected_allocations(pcloud.cloud)
    desync = drop_allocations(pcloud.cloud.settings, 5, seed=5)
    lost = set(desync.consumers)
    assert len(lost) == 5 and not lost & set(placement_allocations(pcloud.cloud))
    before = pcloud.snapshot()
    ctx = context()

    run_action(ctx, pcloud.state(), "heal-allocations", {"dry-run": True, "batch-size": 7})
    got = results(ctx)
    listed = {
        got[f"allocations.{i:02d}.instance"]: (
            got[f"allocations.{i:02d}.action"],
            got[f"allocations.{i:02d}.provider"],
            got[f"allocations.{i:02d}.resources"],
        )
        for i in range(5)
    }
    assert listed == {
        u: (
            "create",
            next(iter(want[u])),
            ",".join(f"{rc}={n}" for rc, n in sorted(next(iter(want[u].values())).items())),
        )
        for u in lost
    }
    assert {k: v for k, v in got.items() if not k.startswith("allocations.")} == {
        "exit-code": "4",
        "healed": "5",
        "up-to-date": str(len(want) - 5),
        "skipped": "0",
        "failed": "0",
        "dry-run": "true",
        "max-count-reached": "false",
        "cells": "2",
    }
    assert pcloud.snapshot() == before

    run_action(ctx, pcloud.state(), "heal-allocations")
    got = results(ctx)
    assert {got[f"allocations.{i:02d}.instance"] for i in range(5)} == lost
    assert {k: v for k, v in got.items() if not k.startswith("allocations.")} == {
        "exit-code": "0",
        "healed": "5",
        "up-to-date": str(len(want) - 5),
        "skipped": "0",
        "failed": "0",
        "dry-run": "false",
        "max-count-reached": "false",
        "cells": "2",
    }
    assert ctx.action_logs[0].startswith("cell1: ")
    assert placement_allocations(pcloud.cloud) == want

    run_action(ctx, pcloud.state(), "heal-allocations")
    got = results(ctx)
    assert (got["exit-code"], got["healed"], got["up-to-date"]) == ("4", "0", str(len(want)))


def test_heal_allocations_max_count_and_one_cell(pcloud: PlacementCloud) -> None:
    want, _ = expected_allocations(pcloud.cloud)
    drop_allocations(pcloud.cloud.settings, 1000, seed=1)
    assert placement_allocations(pcloud.cloud) == {}
    ctx = context()
    run_action(ctx, pcloud.state(), "heal-allocations", {"max-count": 2, "batch-size": 1})
    got = results(ctx)
    assert (got["exit-code"], got["healed"], got["max-count-reached"]) == ("1", "2", "true")
    assert len(placement_allocations(pcloud.cloud)) == 2

    cell2 = pcloud.rows(pcloud.cloud.api, "SELECT uuid FROM cell_mappings WHERE name = 'cell2'")
    in_cell2 = set(pcloud.live_instances("cell2")) & set(want)
    run_action(ctx, pcloud.state(), "heal-allocations", {"cell": str(cell2[0][0])})
    got = results(ctx)
    assert (got["exit-code"], got["healed"], got["cells"]) == ("0", str(len(in_cell2)), "1")
    assert set(placement_allocations(pcloud.cloud)) - set(pcloud.live_instances()) == in_cell2


def test_heal_allocations_force_rewrites_one_instance(pcloud: PlacementCloud) -> None:
    want, _ = expected_allocations(pcloud.cloud)
    victim = next(u for u in pcloud.live_instances() if u in want)
    pcloud.cloud.run(
        pcloud.cloud.placement,
        "UPDATE allocations SET used = 999 WHERE consumer_id = :u",
        u=victim,
    )
    ctx = context()
    run_action(ctx, pcloud.state(), "heal-allocations")
    assert results(ctx)["healed"] == "0"  # allocations exist: not healed without force

    run_action(ctx, pcloud.state(), "heal-allocations", {"instance": victim, "force": True})
    got = results(ctx)
    # nova-manage 34: healing the one instance given exits 0 (4 when nothing to heal).
    assert got == {
        "exit-code": "0",
        "healed": "1",
        "up-to-date": "0",
        "skipped": "0",
        "failed": "0",
        "dry-run": "false",
        "max-count-reached": "false",
        "cells": "1",
        "allocations.00.instance": victim,
        "allocations.00.action": "force",
        "allocations.00.provider": next(iter(want[victim])),
        "allocations.00.resources": ",".join(
            f"{rc}={n}" for rc, n in sorted(next(iter(want[victim].values())).items())
        ),
    }
    assert placement_allocations(pcloud.cloud) == want


def test_heal_allocations_skips_and_failures(pcloud: PlacementCloud) -> None:
    """Skipped instances are listed; one that cannot be healed fails the action, results set."""
    want, _ = expected_allocations(pcloud.cloud)
    live = [u for u in pcloud.live_instances() if u in want]
    busy, lost = live[0], live[1]
    cell1 = pcloud.cloud.cells["cell1"]
    pcloud.cloud.run(
        cell1, "UPDATE instances SET task_state = 'rebooting' WHERE uuid = :u", u=busy
    )
    host = pcloud.rows(cell1, "SELECT host FROM instances WHERE uuid = :u", u=lost)[0][0]
    pcloud.cloud.run(
        pcloud.cloud.placement, "DELETE FROM allocations WHERE consumer_id = :u", u=lost
    )
    pcloud.cloud.run(cell1, "UPDATE instances SET node = 'nowhere' WHERE uuid = :u", u=lost)
    reason = (
        f"Instance {lost}: unable to find one compute_nodes record for host {host} "
        "node nowhere (0 found)"
    )
    ctx = context()
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, pcloud.state(), "heal-allocations")
    assert failed.value.message == f"1 instance(s) not healed (exit code 2); {reason}"
    assert results(ctx) == {
        "exit-code": "2",
        "healed": "0",
        "up-to-date": str(len(want) - 2),
        "skipped": "1",
        "failed": "1",
        "dry-run": "false",
        "max-count-reached": "false",
        "cells": "2",
        "skips.00.instance": busy,
        "skips.00.reason": f"Instance {busy} is undergoing a task state transition: rebooting",
        "failures.00.instance": lost,
        "failures.00.code": "2",
        "failures.00.reason": reason,
    }
    assert state_after(failed.value).unit_status == ops.ActiveStatus(AT_HEAD)


# -- sync-aggregates -------------------------------------------------------------------------


def test_sync_aggregates_adds_back_what_is_missing(pcloud: PlacementCloud) -> None:
    full = pcloud.memberships()
    hosts = {u: h for u, (_, h, _) in live_nodes(pcloud.cloud).items()}
    assert len(full) == NODES  # round robin: every host in one of the two aggregates
    pcloud.cloud.run(pcloud.cloud.placement, "DELETE FROM resource_provider_aggregates")
    pcloud.cloud.run(pcloud.cloud.placement, "DELETE FROM placement_aggregates")
    expected_list = {(a, hosts[p], p) for a, p in full}
    ctx = context()

    run_action(ctx, pcloud.state(), "sync-aggregates", {"dry-run": True})
    got = results(ctx)
    listed = {
        tuple(got[f"memberships.{i:02d}.{k}"] for k in ("aggregate", "host", "provider"))
        for i in range(NODES)
    }
    assert listed == expected_list
    assert {k: v for k, v in got.items() if not k.startswith("memberships.")} == {
        "exit-code": "0",
        "dry-run": "true",
        "aggregates": "2",
        "added": str(NODES),
        "already": "0",
    }
    assert pcloud.memberships() == set()

    run_action(ctx, pcloud.state(), "sync-aggregates")
    got = results(ctx)
    assert (got["exit-code"], got["dry-run"], got["added"]) == ("0", "false", str(NODES))
    assert pcloud.memberships() == full

    run_action(ctx, pcloud.state(), "sync-aggregates")
    assert results(ctx) == {
        "exit-code": "0",
        "dry-run": "false",
        "aggregates": "2",
        "added": "0",
        "already": str(NODES),
    }


def test_sync_aggregates_fails_on_unresolved_hosts_after_adding_the_rest(
    pcloud: PlacementCloud,
) -> None:
    full = pcloud.memberships()
    pcloud.cloud.run(pcloud.cloud.placement, "DELETE FROM resource_provider_aggregates")
    agg = pcloud.rows(pcloud.cloud.api, "SELECT id FROM aggregates ORDER BY id")[0][0]
    pcloud.cloud.run(
        pcloud.cloud.api,
        "INSERT INTO aggregate_hosts (host, aggregate_id) VALUES ('unmapped-host', :a)",
        a=agg,
    )
    ctx = context()
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, pcloud.state(), "sync-aggregates")
    assert failed.value.message == (
        "hosts not mapped to a cell (run nova-manage cell_v2 discover_hosts, then retry): "
        "unmapped-host"
    )
    got = results(ctx)
    assert {k: v for k, v in got.items() if not k.startswith("memberships.")} == {
        "exit-code": "4",
        "dry-run": "false",
        "aggregates": "2",
        "added": str(NODES),
        "already": "0",
        "unmapped-hosts": "unmapped-host",
    }
    assert pcloud.memberships() == full


# -- rebuild-placement -----------------------------------------------------------------------


def test_rebuild_placement_dry_run_writes_nothing(pcloud: PlacementCloud) -> None:
    before = pcloud.snapshot()
    ctx = context()
    run_action(ctx, pcloud.state(), "rebuild-placement", {"dry-run": True})
    got = results(ctx)
    backup = got.pop("steps.1.summary")
    assert backup.startswith(f"would back up the Placement database to {pcloud.backups}/")
    assert backup.endswith(".json.gz")
    assert got == {
        "exit-code": "0",
        "dry-run": "true",
        "providers": str(NODES),
        "inventories": str(3 * NODES),
        "steps.1.name": "backup",
        "steps.2.name": "check",
        "steps.2.summary": "nothing Placement holds is beyond what Nova can rebuild",
        "steps.3.name": "schema",
        "steps.3.summary": "would drop Placement's tables and recreate them at head",
        "steps.4.name": "providers",
        "steps.4.summary": f"would create {NODES} providers, {3 * NODES} inventories",
        "steps.5.name": "heal",
        "steps.5.summary": f"would heal up to {len(expected_allocations(pcloud.cloud)[0])} "
        "instances",
        "steps.6.name": "aggregates",
        "steps.6.summary": "would sync host aggregates",
        "steps.7.name": "audit",
        "steps.7.summary": "would audit the result",
    }
    assert not pcloud.backups.exists()  # a dry run creates not even the directory
    assert pcloud.snapshot() == before


def test_rebuild_placement_fixes_a_restored_cell_and_restore_puts_it_back(
    pcloud: PlacementCloud, tmp_path: Path
) -> None:
    """The issue's scenario: a cell restored with new node uuids; rebuild, audit, restore."""
    changed = restore_cell_with_new_uuids(pcloud.cloud.cells["cell1"], fraction=1.0, seed=2)
    broken = pcloud.snapshot()
    backup = tmp_path / "placement-backup.json.gz"
    ctx = context()

    out = run_action(ctx, pcloud.state(), "rebuild-placement", {"backup": str(backup)})
    got = results(ctx)
    rows = sum(len(v) for v in broken.values())
    digest = got.pop("backup.digest")
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert int(got.pop("backup.bytes")) == backup.stat().st_size
    healed = len(expected_allocations(pcloud.cloud)[0])
    assert got == {
        "exit-code": "0",
        "dry-run": "false",
        "providers": str(NODES),
        "inventories": str(3 * NODES),
        "backup.path": str(backup),
        "backup.rows": got["backup.rows"],
        "steps.1.name": "backup",
        "steps.1.summary": f"{got['backup.rows']} rows saved to {backup} and verified",
        "steps.2.name": "check",
        "steps.2.summary": "nothing Placement holds is beyond what Nova can rebuild",
        "steps.3.name": "schema",
        "steps.3.summary": got["steps.3.summary"],
        "steps.4.name": "providers",
        "steps.4.summary": f"{NODES} providers, {3 * NODES} inventories",
        "steps.5.name": "heal",
        "steps.5.summary": f"{healed} instances healed, 0 skipped, 0 failed",
        "steps.6.name": "aggregates",
        "steps.6.summary": f"{NODES} memberships added",
        "steps.7.name": "audit",
        "steps.7.summary": "clean",
        "heal.healed": str(healed),
        "heal.skipped": "0",
        "heal.failed": "0",
        "aggregates.added": str(NODES),
        "aggregates.exit-code": "0",
        "audit.findings": "0",
    }
    # alembic_version is in the backup too.
    assert int(got["backup.rows"]) == rows + 1
    assert got["steps.3.summary"].startswith("recreated at head; ")
    assert out.unit_status == ops.ActiveStatus(AT_HEAD)
    assert not pcloud.backups.exists()  # an absolute backup path: nothing made elsewhere
    new_uuids = set(changed.values())
    assert new_uuids <= set(provider_names(pcloud))
    assert placement_allocations(pcloud.cloud) == expected_allocations(pcloud.cloud)[0]

    run_action(ctx, pcloud.state(), "placement-audit")
    assert results(ctx)["exit-code"] == "0"

    # The same file again: refused, since a backup is never overwritten.
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, pcloud.state(), "rebuild-placement", {"backup": str(backup)})
    assert failed.value.message == (
        f"backup file {backup} already exists; pass --backup with a new file name"
    )

    run_action(ctx, pcloud.state(), "rebuild-placement", {"restore": str(backup)})
    got = results(ctx)
    tables = {f"rows.{t.replace('_', '-')}": str(len(v)) for t, v in broken.items()}
    assert got == {
        "exit-code": "0",
        "path": str(backup),
        "revision": "a082b8bb98d0",
        "total": str(rows + 1),
        "rows.alembic-version": "1",
        **tables,
    }
    assert pcloud.snapshot() == broken
    run_action(ctx, pcloud.state(), "placement-audit")
    assert results(ctx)["found.name-conflict"] == "3"


def test_rebuild_placement_default_backup_goes_under_var_lib_novadb(
    pcloud: PlacementCloud,
) -> None:
    ctx = context()
    run_action(ctx, pcloud.state(), "rebuild-placement")
    got = results(ctx)
    path = Path(got["backup.path"])
    assert path.parent == pcloud.backups
    assert path.name.startswith("placement-backup-") and path.name.endswith("Z.json.gz")
    assert path.is_file()
    assert pcloud.backups.stat().st_mode & 0o777 == 0o700
    assert got["exit-code"] == "0"

    # A relative name is under the same directory; restore finds it the same way.
    run_action(ctx, pcloud.state(), "rebuild-placement", {"backup": "second.json.gz"})
    assert results(ctx)["backup.path"] == str(pcloud.backups / "second.json.gz")
    run_action(ctx, pcloud.state(), "rebuild-placement", {"restore": "second.json.gz"})
    assert results(ctx)["path"] == str(pcloud.backups / "second.json.gz")


def test_rebuild_placement_refuses_what_nova_cannot_rebuild(
    pcloud: PlacementCloud, tmp_path: Path
) -> None:
    add_orphan_allocations(pcloud.cloud.placement, 2, seed=1)
    pcloud.cloud.run(
        pcloud.cloud.placement,
        "INSERT INTO resource_classes (id, name) VALUES (10000, 'CUSTOM_GOLD')",
    )
    before = pcloud.snapshot()
    reasons = [
        "1 custom resource classes",
        got_orphans := "2 consumers that are neither instances nor migrations",
    ]
    ctx = context()

    # A dry run reports the refusal as its outcome (exit-code 5) and succeeds.
    run_action(ctx, pcloud.state(), "rebuild-placement", {"dry-run": True})
    got = results(ctx)
    assert got["exit-code"] == "5"
    assert got["reasons.00"] == reasons[0]
    assert got["reasons.01"].startswith(got_orphans)
    assert got["steps.2.summary"].startswith("would refuse without --force: 1 custom resource")

    backup = tmp_path / "refused.json.gz"
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, pcloud.state(), "rebuild-placement", {"backup": str(backup)})
    message = failed.value.message
    assert message.startswith(
        "rebuild-placement refused, Placement holds what Nova cannot rebuild: "
        f"{reasons[0]}; {got_orphans} (e.g. "
    )
    assert message.endswith(
        f". Nothing was changed (backup: {backup}); pass --force to rebuild anyway"
    )
    assert not ctx.action_results
    assert backup.is_file()
    assert pcloud.snapshot() == before

    run_action(
        ctx,
        pcloud.state(),
        "rebuild-placement",
        {"backup": str(tmp_path / "forced.json.gz"), "force": True},
    )
    got = results(ctx)
    assert got["exit-code"] == "0"
    assert got["steps.2.summary"].startswith("--force: rebuilding without 1 custom resource")
    assert got["reasons.00"] == reasons[0]
    assert placement_allocations(pcloud.cloud) == expected_allocations(pcloud.cloud)[0]


def test_rebuild_placement_with_problems_fails_with_results(
    pcloud: PlacementCloud, tmp_path: Path
) -> None:
    """Rebuilt, but an instance's flavor asks for a VGPU heal cannot give: exit-code 3."""
    want, _ = expected_allocations(pcloud.cloud)
    vgpu = next(u for u in pcloud.live_instances() if u in want)
    cell1 = pcloud.cloud.cells["cell1"]
    (text,) = pcloud.rows(cell1, "SELECT flavor FROM instance_extra WHERE instance_uuid = :u",
                          u=vgpu)[0]  # fmt: skip
    pcloud.cloud.run(
        cell1,
        "UPDATE instance_extra SET flavor = :f WHERE instance_uuid = :u",
        f=text.replace('"extra_specs": {', '"extra_specs": {"resources:VGPU": "1", ', 1),
        u=vgpu,
    )
    backup = tmp_path / "b.json.gz"
    ctx = context()
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, pcloud.state(), "rebuild-placement", {"backup": str(backup)})
    got = results(ctx)
    assert failed.value.message.startswith(
        f"rebuilt, but 1 instance(s) not healed, e.g. Instance {vgpu}: "
    )
    assert failed.value.message.endswith(f" (backup: {backup})")
    assert (got["exit-code"], got["heal.failed"], got["audit.findings"]) == ("3", "1", "0")
    assert got["steps.5.summary"] == f"{len(want) - 1} instances healed, 0 skipped, 1 failed"
    assert vgpu not in placement_allocations(pcloud.cloud)


def test_rebuild_placement_fails_when_hosts_miss_their_aggregates(
    pcloud: PlacementCloud, tmp_path: Path
) -> None:
    """Rebuilt, but an aggregate names a host no cell knows: exit-code 3, the host named."""
    aggregate = pcloud.rows(pcloud.cloud.api, "SELECT id FROM aggregates ORDER BY id")[0][0]
    pcloud.cloud.run(
        pcloud.cloud.api,
        "INSERT INTO aggregate_hosts (host, aggregate_id) VALUES ('ghost', :a)",
        a=aggregate,
    )
    backup = tmp_path / "b.json.gz"
    ctx = context()
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, pcloud.state(), "rebuild-placement", {"backup": str(backup)})
    got = results(ctx)
    assert failed.value.message == (
        "rebuilt, but sync-aggregates left hosts out (exit code 4): hosts not mapped to a cell "
        f"(run nova-manage cell_v2 discover_hosts, then retry): ghost (backup: {backup})"
    )
    assert (got["exit-code"], got["aggregates.exit-code"], got["heal.failed"]) == ("3", "4", "0")
    assert got["audit.findings"] == "0"


# -- bad params ------------------------------------------------------------------------------

MISSING = "00000000-0000-0000-0000-00000000abcd"
RESTORE_ALONE = "restore takes no other rebuild-placement param (backup, dry-run, force)"


@pytest.mark.parametrize(
    ("action", "params", "message"),
    [
        (
            "placement-audit",
            {"resource-provider": MISSING},
            f"Resource provider with UUID {MISSING} does not exist; check the uuid "
            "(openstack resource provider list)",
        ),
        (
            "heal-allocations",
            {"force": True},
            "The --instance flag is required when using --force flag.",
        ),
        (
            "heal-allocations",
            {"cell": MISSING, "instance": MISSING},
            "The --cell and --instance options are mutually exclusive.",
        ),
        ("heal-allocations", {"max-count": 0}, "Must supply a positive integer for --max-count."),
        ("heal-allocations", {"batch-size": 0}, "--batch-size must be a positive integer."),
        ("heal-allocations", {"cell": MISSING}, f"Cell with uuid {MISSING} was not found."),
        ("rebuild-placement", {"restore": "x.json.gz", "dry-run": True}, RESTORE_ALONE),
        ("rebuild-placement", {"restore": "x.json.gz", "force": True}, RESTORE_ALONE),
        ("rebuild-placement", {"restore": "x.json.gz", "backup": "y.json.gz"}, RESTORE_ALONE),
    ],
)
def test_bad_params_fail_with_one_line_and_change_nothing(
    pcloud: PlacementCloud, action: str, params: dict[str, Any], message: str
) -> None:
    drop_allocations(pcloud.cloud.settings, 3, seed=1)  # something heal would change
    before = pcloud.snapshot()
    ctx = context()
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, pcloud.state(), action, params)
    assert failed.value.message == message
    assert not ctx.action_results
    assert state_after(failed.value).unit_status == ops.ActiveStatus(AT_HEAD)
    assert pcloud.snapshot() == before
    assert not pcloud.backups.exists()


def test_restore_of_a_missing_file_fails_and_changes_nothing(pcloud: PlacementCloud) -> None:
    before = pcloud.snapshot()
    ctx = context()
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, pcloud.state(), "rebuild-placement", {"restore": "absent.json.gz"})
    assert failed.value.message == (
        f"backup file {pcloud.backups / 'absent.json.gz'} does not exist; check the path"
    )
    assert pcloud.snapshot() == before


def test_unknown_instance_for_heal(pcloud: PlacementCloud) -> None:
    instance = str(uuid.uuid4())
    ctx = context()
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, pcloud.state(), "heal-allocations", {"instance": instance})
    assert failed.value.message.startswith(f"Unable to find cell for instance {instance}")
