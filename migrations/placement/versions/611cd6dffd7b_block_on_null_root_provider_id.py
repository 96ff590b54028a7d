"""Block on null root_provider_id

Revision ID: 611cd6dffd7b
Revises: b4ed3a175331
Create Date: 2019-05-09
"""

from novadb.schema.blockers import check_blocker

revision = "611cd6dffd7b"
down_revision = "b4ed3a175331"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Refuse to go on while a provider has no root provider id.

    novadb checks this before any DDL runs (novadb.schema.blockers); this is the
    last line of defence for a run that bypasses that check.
    """
    check_blocker("611cd6dffd7b")
