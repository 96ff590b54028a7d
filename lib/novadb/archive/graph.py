"""Which tables archive moves, and which rows must move with a parent.

Archive follows Nova 34's *model*, not whatever a database happens to hold:
the tables of the current model set that have a ``shadow_`` twin and a
``deleted`` column (Nova's removed/legacy tables such as ``fixed_ips`` or
``consoles`` are left alone), and the model's foreign keys as the tree of
children that move in the same transaction as their parent.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Inspector

# Nova 34's model tables in its processing order (parents before children),
# after skipping shadow tables, alembic_version and models.REMOVED_TABLES.
MODEL_TABLES: tuple[str, ...] = (
    "certificates", "compute_nodes", "console_auth_tokens", "instance_id_mappings",
    "instances", "project_user_quotas", "quota_classes", "quota_usages", "quotas",
    "s3_images", "security_groups", "services", "tags", "task_log", "volume_usage_cache",
    "block_device_mapping", "instance_actions", "instance_extra", "instance_faults",
    "instance_info_caches", "instance_metadata", "instance_system_metadata", "migrations",
    "pci_devices", "reservations", "security_group_instance_association",
    "security_group_rules", "share_mapping", "virtual_interfaces", "instance_actions_events",
)  # fmt: skip


@dataclass(frozen=True)
class Edge:
    """``child.column`` references ``parent.parent_column`` in Nova's model."""

    child: str
    column: str
    parent: str
    parent_column: str


_INSTANCE_CHILDREN = (
    "block_device_mapping", "instance_actions", "instance_extra", "instance_faults",
    "instance_info_caches", "instance_metadata", "instance_system_metadata", "migrations",
    "security_group_instance_association", "virtual_interfaces", "share_mapping",
)  # fmt: skip

MODEL_EDGES: tuple[Edge, ...] = (
    *(Edge(child, "instance_uuid", "instances", "uuid") for child in _INSTANCE_CHILDREN),
    Edge("instance_actions_events", "action_id", "instance_actions", "id"),
    Edge("pci_devices", "compute_node_id", "compute_nodes", "id"),
    Edge("reservations", "usage_id", "quota_usages", "id"),
    Edge("security_group_instance_association", "security_group_id", "security_groups", "id"),
    Edge("security_group_rules", "parent_group_id", "security_groups", "id"),
    Edge("security_group_rules", "group_id", "security_groups", "id"),
)

# Purge's timestamp column where Nova overrides its deleted_at/updated_at/created_at rule.
PURGE_TIMESTAMP = {
    "shadow_instance_actions": "created_at",
    "shadow_instance_actions_events": "created_at",
    "shadow_task_log": "updated_at",
}


@dataclass(frozen=True)
class Graph:
    """The archivable tables present in one database, and the edges between them."""

    tables: tuple[str, ...]
    edges: tuple[Edge, ...]
    # Archivable tables (a deleted column) whose shadow twin is missing.
    missing: tuple[str, ...] = ()

    def children(self, parent: str) -> tuple[Edge, ...]:
        """Edges whose parent is ``parent`` and whose child archive can move."""
        return tuple(e for e in self.edges if e.parent == parent)

    def subtree(self, parent: str) -> tuple[Edge, ...]:
        """Every edge below ``parent``, deepest first: the order rows must move in."""
        out: list[Edge] = []

        def walk(table: str) -> None:
            for edge in self.children(table):
                walk(edge.child)
                out.append(edge)

        walk(parent)
        return tuple(out)

    def missing_below(self, parent: str) -> tuple[str, ...]:
        """Tables whose rows move with ``parent``'s but whose shadow twin is missing.

        Such a tree cannot move at all: without the child's shadow table the
        parent would be archived without its children, or held back forever.
        """
        present = set(self.tables) | set(self.missing)
        out: list[str] = []

        def walk(table: str) -> None:
            for edge in MODEL_EDGES:
                if edge.parent == table and edge.child in present:
                    if edge.child in self.missing and edge.child not in out:
                        out.append(edge.child)
                    walk(edge.child)

        walk(parent)
        return tuple(out)


def load_graph(conn: Connection, inspector: Inspector | None = None) -> Graph:
    """Nova's archivable tables (with a shadow twin and a deleted column) in ``conn``.

    Pass the ``inspector`` that reflects the tables next (see
    :class:`novadb.archive.tree_sql.Schema`): its cache keeps each table's
    ``SHOW CREATE TABLE`` to one per run.
    """
    if inspector is None:
        inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    tables = []
    missing = []
    for name in MODEL_TABLES:
        if name not in present:
            continue
        columns = {c["name"] for c in inspector.get_columns(name)}
        if "deleted" not in columns:
            continue
        if f"shadow_{name}" in present:
            tables.append(name)
        else:
            missing.append(name)
    movable = set(tables)
    edges = tuple(e for e in MODEL_EDGES if e.child in movable and e.parent in movable)
    return Graph(tuple(tables), edges, tuple(missing))
