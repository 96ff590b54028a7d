"""Add indexes for source/dest host-node migration lookups

Revision ID: ab450ba04102
Revises: 2903cd72dc14
Create Date: 2025-08-26
"""

from alembic import op

revision = "ab450ba04102"
down_revision = "2903cd72dc14"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index migrations by (deleted, host, node, status) for each side."""
    op.create_index(
        "migrations_by_dest_host_nodes_and_status_idx",
        "migrations",
        ["deleted", "dest_compute", "dest_node", "status"],
    )
    op.create_index(
        "migrations_by_src_host_nodes_and_status_idx",
        "migrations",
        ["deleted", "source_compute", "source_node", "status"],
    )
