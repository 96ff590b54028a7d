"""Nova 34's online data migrations, in nova-manage's order, then Placement 16's.

Migrations not yet written here are listed in :data:`PENDING` so the runner
can say so rather than silently skip them.
"""

from __future__ import annotations

from novadb.online import cell_uuids, placement
from novadb.online.base import Migration

MIGRATIONS: list[Migration] = [
    Migration("migration_migrate_to_uuid", "main", cell_uuids.migration_migrate_to_uuid),
    Migration("BlockDeviceMapping.populate_uuids", "main", cell_uuids.bdm_populate_uuids),
    Migration("PciDevice.populate_dev_uuids", "main", cell_uuids.pci_populate_dev_uuids),
    Migration("populate_instance_compute_id", "main", cell_uuids.populate_instance_compute_id),
    Migration("set_root_provider_ids", "placement", placement.set_root_provider_ids),
    Migration("create_incomplete_consumers", "placement", placement.create_incomplete_consumers),
]
