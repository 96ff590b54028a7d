"""Block on null consumer

Revision ID: b5c396305c25
Revises: 611cd6dffd7b
Create Date: 2019-05-09
"""

from novadb.schema.blockers import check_blocker

revision = "b5c396305c25"
down_revision = "611cd6dffd7b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Refuse to go on while an allocation has no consumer record."""
    check_blocker("b5c396305c25")
