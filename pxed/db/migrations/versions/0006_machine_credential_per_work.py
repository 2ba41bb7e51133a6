"""one machine credential per work item, bound to its client; events count repeats

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:00:00

machine_credentials gets the work it was minted for (unique, gone with its
work), the nonce its token is derived from, and the client address it was
bound to.  Existing credentials have no nonce: the next boot answer mints a
new one.  events gets a count and the time of the last repeat.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("machine_credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("work_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("nonce", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("bound_address", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("bound_at", sa.DateTime(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_machine_credentials_work_id"), ["work_id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_machine_credentials_work_id_boot_setups"),
            "boot_setups",
            ["work_id"],
            ["id"],
            ondelete="CASCADE",
        )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("count", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("last_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("last_at")
        batch_op.drop_column("count")
    with op.batch_alter_table("machine_credentials", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_machine_credentials_work_id_boot_setups"), type_="foreignkey"
        )
        batch_op.drop_constraint(batch_op.f("uq_machine_credentials_work_id"), type_="unique")
        batch_op.drop_column("bound_at")
        batch_op.drop_column("bound_address")
        batch_op.drop_column("nonce")
        batch_op.drop_column("work_id")
