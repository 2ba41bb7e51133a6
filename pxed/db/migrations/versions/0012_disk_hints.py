"""root device hints on setup entries and the queue's frozen copies

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 12:40:00

setup_images and boot_setup_images gain disk_hints, the entry's root
device hints as JSON (pxed.agent.wire.DiskHints): the disk the image goes
to.  Null, as every existing entry gets, keeps what pxed did before: the
entry's position picks the disk in kernel name order.  Plain nullable ADD
COLUMN, no batch copy.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TABLES = ("setup_images", "boot_setup_images")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("disk_hints", sa.Text(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "disk_hints")
