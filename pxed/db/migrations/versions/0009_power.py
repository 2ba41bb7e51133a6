"""machines' power control: how to reach each BMC, and what each work does
with the power once it is complete

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 00:40:00

``machine_power`` holds one row per machine that has a BMC pxed may drive
(Redfish or IPMI): its address, user name, the password sealed with the
key in ``<data-dir>/power.key``, the Redfish system id, whether TLS is
verified, and the machine's defaults for queueing (``on_queue``: cycle,
on, none) and completion (``after``: reboot, poweroff, none).
``boot_setups.after`` is that choice frozen on each queue entry; existing
entries get "none" (what pxed did before: nothing).  Plain ADD COLUMN with
a server default, no batch copy.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "machine_power",
        sa.Column("machine_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("driver", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=255), server_default="", nullable=False),
        sa.Column("username", sa.String(length=255), server_default="", nullable=False),
        sa.Column("password_sealed", sa.Text(), server_default="", nullable=False),
        sa.Column("system", sa.String(length=255), server_default="", nullable=False),
        sa.Column("verify_tls", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("on_queue", sa.String(length=8), server_default="none", nullable=False),
        sa.Column("after", sa.String(length=16), server_default="none", nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_machine_power_machine_id_machines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("machine_id", name=op.f("pk_machine_power")),
    )
    op.add_column(
        "boot_setups",
        sa.Column("after", sa.String(length=16), server_default="none", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("boot_setups", "after")
    op.drop_table("machine_power")
