"""machines, machine images and events

Revision ID: 0001
Revises:
Create Date: 2026-11-27 07:23:48.183467
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_at"), ["at"], unique=False)
        batch_op.create_index("ix_events_target", ["target_type", "target"], unique=False)

    op.create_table(
        "images",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("disk_uuid", sa.String(length=64), server_default="", nullable=False),
        sa.Column("compression", sa.String(length=16), server_default="none", nullable=False),
        sa.Column("file_type", sa.String(length=16), server_default="raw", nullable=False),
        sa.Column("filesystem", sa.String(length=16), server_default="raw", nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_images")),
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_images_owner"), ["owner"], unique=False)

    op.create_table(
        "machines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("architecture", sa.String(length=16), nullable=False),
        sa.Column("managed", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=32), server_default="new", nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=True),
        sa.Column("image_uuid", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_uuid"],
            ["images.uuid"],
            name=op.f("fk_machines_image_uuid_images"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machines")),
        sa.UniqueConstraint("name", name=op.f("uq_machines_name")),
    )
    op.create_table(
        "machine_macs",
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_machine_macs_machine_id_machines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("mac", name=op.f("pk_machine_macs")),
    )
    with op.batch_alter_table("machine_macs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_machine_macs_machine_id"), ["machine_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("machine_macs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_machine_macs_machine_id"))

    op.drop_table("machine_macs")
    op.drop_table("machines")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_images_owner"))

    op.drop_table("images")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_target")
        batch_op.drop_index(batch_op.f("ix_events_at"))

    op.drop_table("events")
