"""The sample-cloud generator writes a realistic, valid cell on both dialects."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from novadb.archive.archive import ArchiveOptions, archive
from novadb.config import load_settings
from novadb.connections import create_engine
from novadb.sample.cloud import REAL_CELL, CloudSpec, populate
from novadb.schema.sync import sync


def _count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def test_generated_cloud_has_novas_shape(new_db: Callable[[], str]) -> None:
    main_url, api_url = new_db(), new_db()
    sync(load_settings(database=main_url, api_database=api_url, placement_database=new_db()))
    main, api = create_engine(main_url), create_engine(api_url)
    spec = CloudSpec(instances=1500, deleted_fraction=0.4, orphan_fraction=0.1, seed=7)
    result = populate(main, api, spec, cell_id=None)

    assert result.rows["instances"] == 1500
    assert result.rows["instance_system_metadata"] == 8 * 1500
    assert result.rows["instance_actions"] == result.rows["instance_actions_events"] == 3000
    assert 0.2 < result.rows["instance_faults"] / 1500 < 0.4
    assert 0.1 < result.rows["migrations"] / 1500 < 0.3
    assert result.rows["API_DB.instance_mappings"] == result.rows["API_DB.request_specs"] == 1500
    # What the counts say is what the database holds.
    for table, rows in result.rows.items():
        engine, name = (api, table[7:]) if table.startswith("API_DB.") else (main, table)
        assert _count(engine, f"SELECT count(*) FROM {name}") == rows, table

    deleted = _count(main, "SELECT count(*) FROM instances WHERE deleted != 0")
    assert deleted == result.deleted_instances
    assert 0.3 < deleted / 1500 < 0.5
    assert _count(main, "SELECT count(*) FROM instances WHERE deleted != 0 AND deleted != id") == 0
    # Orphans: deleted instances whose children stayed live.
    orphans = _count(
        main,
        "SELECT count(*) FROM instances i JOIN instance_extra e ON e.instance_uuid = i.uuid "
        "WHERE i.deleted != 0 AND e.deleted = 0",
    )
    assert orphans == result.orphaned_instances > 0
    # Instance actions are never soft-deleted, as in Nova.
    assert _count(main, "SELECT count(*) FROM instance_actions WHERE deleted != 0") == 0
    # Deleted services and compute nodes exist.
    assert (
        _count(main, "SELECT count(*) FROM compute_nodes WHERE deleted != 0") == spec.deleted_hosts
    )

    # A second run continues after the existing ids.
    again = populate(main, api, CloudSpec(instances=10, seed=8))
    assert again.rows["instances"] == 10
    assert _count(main, "SELECT count(*) FROM instances") == 1510
    main.dispose()
    api.dispose()


def test_real_cell_mix_has_its_shape_and_archives_completely(new_db: Callable[[], str]) -> None:
    """REAL_CELL (the benchmark's second shape): many events per action, ports, unplugged PCI."""
    main_url, api_url = new_db(), new_db()
    settings = load_settings(database=main_url, api_database=api_url, placement_database=new_db())
    sync(settings)
    main, api = create_engine(main_url), create_engine(api_url)
    spec = CloudSpec(instances=400, hosts=6, deleted_hosts=2, seed=11, mix=REAL_CELL)
    result = populate(main, api, spec)

    mix = REAL_CELL
    assert result.rows["instance_actions"] == mix.actions * 400
    assert result.rows["instance_actions_events"] == mix.actions * mix.events_per_action * 400
    assert result.rows["block_device_mapping"] == mix.block_devices * 400
    assert result.rows["virtual_interfaces"] == mix.virtual_interfaces * 400
    assert result.rows["pci_devices"] == 8 * mix.pci_per_host
    # A deleted host's devices are all unplugged; a live host's, a quarter of them.
    unplugged = 2 * mix.pci_per_host + 6 * int(mix.pci_per_host * mix.pci_deleted)
    assert _count(main, "SELECT count(*) FROM pci_devices WHERE deleted != 0") == unplugged
    caches = _count(main, "SELECT min(length(network_info)) FROM instance_info_caches")
    assert caches > 500  # two ports' worth of Neutron's description
    for table, rows in result.rows.items():
        engine, name = (api, table[7:]) if table.startswith("API_DB.") else (main, table)
        assert _count(engine, f"SELECT count(*) FROM {name}") == rows, table

    archived = archive(settings, ArchiveOptions(until_complete=True))
    assert archived.complete and archived.failures == []
    # Orphans (children left live by an interrupted cleanup) go with their instance.
    assert archived.rows["instances"] == result.deleted_instances
    assert archived.rows["pci_devices"] == unplugged
    assert _count(main, "SELECT count(*) FROM pci_devices WHERE deleted != 0") == 0
    # Every action event of a deleted instance went with it, several per action.
    assert archived.rows["instance_actions_events"] == (
        result.deleted_instances * mix.actions * mix.events_per_action
    )
    assert _count(main, "SELECT count(*) FROM instances WHERE deleted != 0") == 0
    main.dispose()
    api.dispose()
