"""leases: who has which machine from when until when, and what each
machine does when a lease of it ends

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 03:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "machine_id",
            sa.Integer(),
            sa.ForeignKey("machines.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "holder_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("warned_at", sa.DateTime(), nullable=True),
        sa.Column("reservation", sa.String(36), nullable=False),
    )
    op.create_index("ix_leases_machine_id", "leases", ["machine_id"])
    op.create_index("ix_leases_holder_id", "leases", ["holder_id"])
    op.create_index("ix_leases_reservation", "leases", ["reservation"])
    op.add_column(
        "machines",
        sa.Column("lease_end", sa.String(8), server_default="poweroff", nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        # In place, as 0014's last_user_id: a rebuilt machines table would
        # not survive the rows referring to it.
        op.execute(
            "ALTER TABLE machines ADD COLUMN lease_setup_uuid VARCHAR(36)"
            " REFERENCES image_setups (uuid)"
        )
    else:
        op.add_column(
            "machines",
            sa.Column(
                "lease_setup_uuid",
                sa.String(36),
                sa.ForeignKey("image_setups.uuid"),
                nullable=True,
            ),
        )


def downgrade() -> None:
    op.drop_column("machines", "lease_setup_uuid")
    op.drop_column("machines", "lease_end")
    op.drop_table("leases")
