"""hardware inventory, enlistment credentials, deploy progress

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 01:00:00

Three new tables, nothing existing changes: machine_hardware (what the
management OS found on a machine, with the figures GET /machines filters
on), enlist_credentials (one per unknown MAC booted to enlist) and
work_progress (bytes written of each image of a work item).
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "machine_hardware",
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("arch", sa.String(length=16), nullable=False),
        sa.Column("cpu_count", sa.Integer(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("largest_disk", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_machine_hardware_machine_id_machines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("machine_id", name=op.f("pk_machine_hardware")),
    )
    op.create_table(
        "enlist_credentials",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enlist_credentials")),
        sa.UniqueConstraint("mac", name=op.f("uq_enlist_credentials_mac")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_enlist_credentials_token_hash")),
    )
    op.create_table(
        "work_progress",
        sa.Column("work_id", sa.Integer(), nullable=False),
        sa.Column("image_uuid", sa.String(length=36), nullable=False),
        sa.Column("written", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["work_id"],
            ["boot_setups.id"],
            name=op.f("fk_work_progress_work_id_boot_setups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("work_id", "image_uuid", name=op.f("pk_work_progress")),
    )


def downgrade() -> None:
    op.drop_table("work_progress")
    op.drop_table("enlist_credentials")
    op.drop_table("machine_hardware")
