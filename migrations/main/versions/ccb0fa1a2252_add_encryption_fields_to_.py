"""Add encryption fields to BlockDeviceMapping

Revision ID: ccb0fa1a2252
Revises: 16f1fbcab42b
Create Date: 2022-01-12
"""

import sqlalchemy as sa
from alembic import op

revision = "ccb0fa1a2252"
down_revision = "16f1fbcab42b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the ephemeral encryption columns to block_device_mapping (+ shadow)."""
    for prefix in ("", "shadow_"):
        table = prefix + "block_device_mapping"
        op.add_column(table, sa.Column("encrypted", sa.Boolean(), nullable=True))
        op.add_column(table, sa.Column("encryption_secret_uuid", sa.String(36), nullable=True))
        op.add_column(table, sa.Column("encryption_format", sa.String(128), nullable=True))
        op.add_column(table, sa.Column("encryption_options", sa.String(4096), nullable=True))
