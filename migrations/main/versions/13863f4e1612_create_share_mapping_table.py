"""Create share_mapping table

Revision ID: 13863f4e1612
Revises: 1acf2c98e646
Create Date: 2023-06-26
"""

import sqlalchemy as sa
from alembic import op
from novadb.schema.column_types import BigIntegerPK

revision = "13863f4e1612"
down_revision = "1acf2c98e646"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create share_mapping (virtiofs shares attached to instances); no shadow."""
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
        mysql_engine="InnoDB",
        mysql_charset="utf8",
    )
