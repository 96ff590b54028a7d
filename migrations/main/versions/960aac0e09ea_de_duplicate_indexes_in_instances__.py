"""De-duplicate indexes in instances, console_auth_tokens

Revision ID: 960aac0e09ea
Revises: ccb0fa1a2252
Create Date: 2022-09-15
"""

from alembic import op

revision = "960aac0e09ea"
down_revision = "ccb0fa1a2252"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop indexes that duplicate a unique constraint."""
    with op.batch_alter_table("console_auth_tokens") as batch_op:
        batch_op.drop_index("console_auth_tokens_token_hash_idx")
    with op.batch_alter_table("instances") as batch_op:
        batch_op.drop_index("uuid")
