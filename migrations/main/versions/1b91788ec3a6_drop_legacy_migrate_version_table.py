"""Drop legacy migrate_version table

Revision ID: 1b91788ec3a6
Revises: 960aac0e09ea
Create Date: 2023-02-01
"""

import sqlalchemy as sa
from alembic import op
from novadb.schema.revision_helpers import is_offline

revision = "1b91788ec3a6"
down_revision = "960aac0e09ea"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop sqlalchemy-migrate's bookkeeping table, if a legacy database has it."""
    if is_offline():
        op.execute("DROP TABLE IF EXISTS migrate_version")
        return
    if sa.inspect(op.get_bind()).has_table("migrate_version"):
        op.drop_table("migrate_version")
