"""rebuild-placement end to end: the restored-cell scenario, refusals, dry run, restore.

The seed scenario of the issue: a cloud whose cell database is restored from
backup with new compute node uuids.  placement-audit reports the name
conflicts (nova-compute's 409), rebuild-placement fixes everything, the
audit comes back clean, every instance's allocations equal its flavor, the
aggregates are back, and the backup restores the exact prior state.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from novadb.cli.main import main
from novadb.errors import BadInput
from novadb.placement.audit import placement_audit
from novadb.placement.backup.database import PLACEMENT_TABLES
from novadb.placement.heal import heal_allocations
from novadb.placement.rebuild import RebuildRefused, RebuildStopped, rebuild_placement, restore
from novadb.progress import Event
from novadb.sample.placement import (
    add_orphan_allocations,
    restore_cell_with_new_uuids,
)

from tests.integration.clouds import (
    Cloud,
    expected_allocations,
    live_nodes,
    memberships,
    placement_allocations,
)


def snapshot(c: Cloud) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every Placement table, in a stable order."""
    meta = sa.MetaData()
    meta.reflect(c.placement, only=list(PLACEMENT_TABLES))
    out = {}
    with c.placement.connect() as conn:
        for name in PLACEMENT_TABLES:
            table = meta.tables[name]
            rows = conn.execute(sa.select(table).order_by(*table.primary_key.columns)).all()
            out[name] = [tuple(r) for r in rows]
    return out


def expected_memberships(c: Cloud) -> set[tuple[str, str]]:
    """(aggregate uuid, provider uuid) Nova's host aggregates call for."""
    hosts = c.rows(
        c.api,
        "SELECT a.uuid, h.host FROM aggregates a JOIN aggregate_hosts h ON h.aggregate_id = a.id",
    )
    node_of = {host: u for u, (_, host, _) in live_nodes(c).items()}
    return {(str(a), node_of[str(h)]) for a, h in hosts}


def test_restored_cell_is_rebuilt_clean_and_the_backup_restores(
    placement_cloud: Cloud, tmp_path: Path
) -> None:
    cloud = placement_cloud
    want, _ = expected_allocations(cloud)
    changed = restore_cell_with_new_uuids(cloud.cells["cell1"], fraction=1.0, seed=2)
    assert len(changed) == 4
    found = placement_audit(cloud.settings)
    assert found.exit_code == 3
    assert found.count("name-conflict") == 4
    before = snapshot(cloud)

    backup = tmp_path / "placement.json.gz"
    events: list[str] = []
    result = rebuild_placement(
        cloud.settings, backup=str(backup), progress=lambda e: events.append(e.message)
    )
    assert result.exit_code == 0, [s.summary for s in result.steps]
    assert [s.name for s in result.steps] == [
        "backup", "check", "schema", "providers", "heal", "aggregates", "audit",
    ]  # fmt: skip
    assert [f"{s.number}/7" for s in result.steps] == [f"{n}/7" for n in range(1, 8)]
    assert sum(1 for m in events if m.startswith(("1/7", "4/7", "7/7"))) == 3
    assert result.audit is not None and result.audit.findings == []
    assert placement_audit(cloud.settings).exit_code == 0

    # Every compute node has its provider under its new uuid; allocations follow the flavors.
    nodes = live_nodes(cloud)
    providers = {
        str(u): str(n)
        for u, n in cloud.rows(cloud.placement, "SELECT uuid, name FROM resource_providers")
    }
    assert providers == {u: name for u, (_, _, name) in nodes.items()}
    want_now, _ = expected_allocations(cloud)
    assert placement_allocations(cloud) == want_now
    assert {k: list(v.values()) for k, v in want_now.items()} == {
        k: list(v.values()) for k, v in want.items()
    }  # same resources; only the cell1 providers' uuids moved
    assert memberships(cloud) == expected_memberships(cloud)
    assert result.providers == len(nodes) and result.inventories == 3 * len(nodes)

    restored = restore(cloud.settings, str(backup))
    assert {t: n for t, n in restored.rows.items() if t != "alembic_version"} == {
        t: len(v) for t, v in before.items()
    }
    assert snapshot(cloud) == before


def test_refuses_what_nova_cannot_rebuild_and_changes_nothing(
    placement_lite: Cloud, tmp_path: Path
) -> None:
    lite = placement_lite
    orphans = add_orphan_allocations(lite.placement, 2, seed=1)
    lite.run(
        lite.placement, "INSERT INTO resource_classes (id, name) VALUES (10000, 'CUSTOM_GOLD')"
    )
    root = lite.rows(lite.placement, "SELECT id FROM resource_providers ORDER BY id")[0][0]
    lite.run(
        lite.placement,
        "INSERT INTO resource_providers (uuid, name, generation, parent_provider_id) "
        "VALUES (:u, 'bw-provider', 0, :p)",
        u=str(uuid.uuid4()),
        p=root,
    )
    before = snapshot(lite)
    backup = tmp_path / "b.json.gz"
    with pytest.raises(RebuildRefused) as err:
        rebuild_placement(lite.settings, backup=str(backup))
    message = str(err.value)
    assert err.value.exit_code == 5
    assert "2 consumers that are neither instances nor migrations" in message
    assert "1 custom resource classes" in message
    assert "1 nested providers" in message
    assert "pass --force" in message and str(backup) in message
    assert snapshot(lite) == before
    assert backup.exists()  # step 1 ran: the backup is there to inspect

    forced = rebuild_placement(lite.settings, backup=str(tmp_path / "c.json.gz"), force=True)
    assert forced.exit_code == 0
    assert len(forced.reasons) == 3
    assert not set(placement_allocations(lite)) & set(orphans.consumers)


def test_dry_run_reports_and_writes_nothing(placement_lite: Cloud, tmp_path: Path) -> None:
    lite = placement_lite
    before = snapshot(lite)
    backup = tmp_path / "never.json.gz"
    result = rebuild_placement(lite.settings, backup=str(backup), dry_run=True)
    assert result.exit_code == 0
    assert [s.number for s in result.steps] == list(range(1, 8))
    assert result.steps[3].summary == "would create 3 providers, 9 inventories"
    assert not backup.exists()
    assert snapshot(lite) == before


def test_pcpu_inventory_is_carried_over_by_name(placement_lite: Cloud, tmp_path: Path) -> None:
    lite = placement_lite
    name = str(lite.rows(lite.placement, "SELECT name FROM resource_providers ORDER BY id")[0][0])
    lite.run(
        lite.placement,
        "INSERT INTO inventories (resource_provider_id, resource_class_id, total, reserved, "
        "min_unit, max_unit, step_size, allocation_ratio) SELECT id, 14, 16, 0, 1, 16, 1, 1.0 "
        "FROM resource_providers WHERE name = :n",
        n=name,
    )
    restore_cell_with_new_uuids(lite.cells["cell1"], fraction=1.0, seed=5)
    result = rebuild_placement(lite.settings, backup=str(tmp_path / "p.json.gz"))
    assert result.exit_code == 0
    rows = lite.rows(
        lite.placement,
        "SELECT rp.name, i.total FROM inventories i JOIN resource_providers rp "
        "ON rp.id = i.resource_provider_id WHERE i.resource_class_id = 14",
    )
    assert [(str(n), int(t)) for n, t in rows] == [(name, 16)]


def test_refuses_a_placement_database_shared_with_nova(placement_lite: Cloud) -> None:
    lite = placement_lite
    shared = lite.settings.__class__(
        main=lite.settings.main, api=lite.settings.api, placement=lite.settings.api
    )
    with pytest.raises(BadInput, match="needs \\[placement_database\\]/connection of its own"):
        rebuild_placement(shared, dry_run=True)


def test_cli_rebuild_and_restore(
    placement_lite: Cloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lite = placement_lite
    s = lite.settings
    base = ["--database", str(s.main), "--api-database", str(s.api), "--placement-database",
            str(s.placement)]  # fmt: skip
    backup = str(tmp_path / "cli.json.gz")
    assert main([*base, "rebuild-placement", "--backup", backup]) == 0
    out = capsys.readouterr().out
    assert "7/7" in out and "clean" in out
    assert main([*base, "rebuild-placement", "--backup", backup]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*base, "rebuild-placement", "--restore", backup, "--force"]) == 2
    assert main([*base, "rebuild-placement", "--restore", backup]) == 0
    assert "restored" in capsys.readouterr().out
    assert main([*base, "placement-audit"]) == 0


def test_ctrl_c_stops_only_where_placement_stays_usable(
    placement_lite: Cloud, tmp_path: Path
) -> None:
    lite = placement_lite
    before = snapshot(lite)
    stop = threading.Event()
    stop.set()  # before step 3: nothing may change
    with pytest.raises(RebuildStopped, match="before changing anything") as err:
        rebuild_placement(lite.settings, backup=str(tmp_path / "a.json.gz"), stop=stop)
    assert err.value.exit_code == 130
    assert snapshot(lite) == before

    late = threading.Event()

    def on_event(event: Event) -> None:
        if event.operation == "heal-allocations" and event.kind == "batch":
            late.set()

    with pytest.raises(RebuildStopped, match="run `novadb heal-allocations`"):
        rebuild_placement(
            lite.settings, backup=str(tmp_path / "b.json.gz"), progress=on_event, stop=late
        )
    # Providers and inventory are all there; what heal did not reach, heal finishes.
    assert len(lite.rows(lite.placement, "SELECT id FROM resource_providers")) == 3
    finished = heal_allocations(lite.settings)
    assert finished.failed == []
    want, _ = expected_allocations(lite)
    assert placement_allocations(lite) == want
