"""Resolve shadow table diffs

Revision ID: 16f1fbcab42b
Revises: 8f2f1571d55b
Create Date: 2021-08-20
"""

import sqlalchemy as sa
from alembic import op
from novadb.schema.revision_helpers import dialect_name

revision = "16f1fbcab42b"
down_revision = "8f2f1571d55b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Bring shadow tables in line with their live twins."""
    with op.batch_alter_table("shadow_volume_usage_cache") as batch_op:
        batch_op.alter_column("user_id", type_=sa.String(64), existing_type=sa.String(36))
    op.drop_index("shadow_instance_extra_idx", table_name="shadow_instance_extra")
    op.drop_index("shadow_migrations_uuid", table_name="shadow_migrations")
    if dialect_name() == "mysql":
        op.execute(
            "ALTER TABLE shadow_instance_type_extra_specs "
            "CONVERT TO CHARACTER SET utf8 COLLATE utf8_bin"
        )
