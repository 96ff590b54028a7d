"""Remove unused build_requests columns

Revision ID: b30f573d3377
Revises: d67eeaabee36
Create Date: 2021-09-27
"""

from alembic import op

revision = "b30f573d3377"
down_revision = "d67eeaabee36"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop the build_requests columns Nova stopped using in Queens."""
    with op.batch_alter_table("build_requests") as batch_op:
        for column in (
            "vm_state",
            "access_ip_v6",
            "config_drive",
            "locked_by",
            "security_groups",
            "progress",
            "info_cache",
            "display_name",
            "instance_metadata",
            "image_ref",
            "key_name",
            "user_id",
            "access_ip_v4",
            "task_state",
            "request_spec_id",
        ):
            batch_op.drop_column(column)
