"""Nova 34's online data migrations, in nova-manage's order, then Placement 16's.

Names are the ones nova-manage prints (its functions' ``__name__``:
``populate_uuids`` is BlockDeviceMapping's, ``populate_dev_uuids``
PciDevice's), so its table and ours read the same.  Every function is wrapped
in :func:`~novadb.online.common.chunked`, so a large ``--max-count`` is worked
through in short transactions of at most :data:`~novadb.online.common.CHUNK`
rows.
"""

from __future__ import annotations

from novadb.online import api_cells, cell_uuids, compute, instances, placement, quotas, vifs
from novadb.online.base import Migration
from novadb.online.common import chunked

MIGRATIONS: list[Migration] = [
    Migration(name, database, chunked(func))
    for name, database, func in (
        ("migrate_quota_limits_to_api_db", "main", quotas.migrate_quota_limits_to_api_db),
        ("migrate_quota_classes_to_api_db", "main", quotas.migrate_quota_classes_to_api_db),
        ("migration_migrate_to_uuid", "main", cell_uuids.migration_migrate_to_uuid),
        ("populate_uuids", "main", cell_uuids.bdm_populate_uuids),
        (
            "populate_missing_availability_zones",
            "main",
            instances.populate_missing_availability_zones,
        ),
        ("populate_queued_for_delete", "api", api_cells.populate_queued_for_delete),
        ("migrate_empty_ratio", "main", compute.migrate_empty_ratio),
        ("fill_virtual_interface_list", "api", vifs.fill_virtual_interface_list_all_cells),
        ("populate_user_id", "api", api_cells.populate_user_id),
        ("populate_dev_uuids", "main", cell_uuids.pci_populate_dev_uuids),
        ("populate_instance_compute_id", "main", cell_uuids.populate_instance_compute_id),
        ("set_root_provider_ids", "placement", placement.set_root_provider_ids),
        ("create_incomplete_consumers", "placement", placement.create_incomplete_consumers),
    )
]
