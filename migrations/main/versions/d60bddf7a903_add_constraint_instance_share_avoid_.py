"""Add constraint instance share avoid duplicates

Revision ID: d60bddf7a903
Revises: 13863f4e1612
Create Date: 2024-01-17
"""

import sqlalchemy as sa
from alembic import op
from novadb.schema.column_types import BigIntegerPK

revision = "d60bddf7a903"
down_revision = "13863f4e1612"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Recreate share_mapping with uniqueness per instance (Nova keeps the odd names)."""
    op.drop_table("share_mapping")
    op.create_table(
        "share_mapping",
        sa.Column("created_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("id", BigIntegerPK(), primary_key=True, nullable=False),
        sa.Column("uuid", sa.String(36), nullable=True),
        sa.Column("instance_uuid", sa.String(36), nullable=True),
        sa.Column("share_id", sa.String(36), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("tag", sa.String(48), nullable=True),
        sa.Column("export_location", sa.Text(), nullable=True),
        sa.Column("share_proto", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_uuid"], ["instances.uuid"], name="share_mapping_instance_uuid_fkey"
        ),
        sa.Index("share_idx", "share_id"),
        sa.Index("share_mapping_instance_uuid_share_id_idx", "instance_uuid", "share_id"),
        sa.UniqueConstraint(
            "instance_uuid", "share_id", name="uniq_key_pairs0instance_uuid0share_id"
        ),
        sa.UniqueConstraint("instance_uuid", "tag", name="uniq_key_pairs0instance_uuid0tag"),
        mysql_engine="InnoDB",
        mysql_charset="utf8",
    )
