"""Add compute_id to instance

Revision ID: 1acf2c98e646
Revises: 1b91788ec3a6
Create Date: 2023-02-09
"""

import sqlalchemy as sa
from alembic import op

revision = "1acf2c98e646"
down_revision = "1b91788ec3a6"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Link instances and migrations to compute nodes by id (compute-object-ids)."""
    for prefix in ("", "shadow_"):
        op.add_column(
            prefix + "instances", sa.Column("compute_id", sa.BigInteger(), nullable=True)
        )
    op.create_index("instances_compute_id_deleted_idx", "instances", ["compute_id", "deleted"])
    for prefix in ("", "shadow_"):
        op.add_column(
            prefix + "migrations", sa.Column("dest_compute_id", sa.BigInteger(), nullable=True)
        )
    op.create_index(
        "migrations_dest_compute_id_deleted_idx", "migrations", ["dest_compute_id", "deleted"]
    )
