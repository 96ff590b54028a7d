"""Add tls_port to console_auth_tokens

Revision ID: 2903cd72dc14
Revises: d60bddf7a903
Create Date: 2024-07-15
"""

import sqlalchemy as sa
from alembic import op

revision = "2903cd72dc14"
down_revision = "d60bddf7a903"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add tls_port to console_auth_tokens."""
    op.add_column("console_auth_tokens", sa.Column("tls_port", sa.Integer(), nullable=True))
