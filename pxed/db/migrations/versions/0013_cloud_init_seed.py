"""the cloud-init seed and growing: images that boot with cloud-init or
grow to their disk, the seed choice and user-data of each queued work

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 13:10:00

images gain cloud_init and grow (false for every existing image: nothing
changes for them); boot_setups gain seed (null: as the images say) and
user_data (null: none).  Plain ADD COLUMN, no batch copy.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "images",
        sa.Column("cloud_init", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "images", sa.Column("grow", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column("boot_setups", sa.Column("seed", sa.Boolean(), nullable=True))
    op.add_column("boot_setups", sa.Column("user_data", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("boot_setups", "user_data")
    op.drop_column("boot_setups", "seed")
    op.drop_column("images", "grow")
    op.drop_column("images", "cloud_init")
