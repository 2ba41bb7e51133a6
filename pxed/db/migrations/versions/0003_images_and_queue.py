"""image versions, setups, boot queue, machine logs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 07:41:01.311367
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "image_setups",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_image_setups")),
    )
    with op.batch_alter_table("image_setups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_setups_owner"), ["owner"], unique=False)

    op.create_table(
        "image_versions",
        sa.Column("image_uuid", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_uuid"],
            ["images.uuid"],
            name=op.f("fk_image_versions_image_uuid_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_uuid", "version", name=op.f("pk_image_versions")),
    )
    op.create_table(
        "boot_setups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("setup_uuid", sa.String(length=36), nullable=True),
        sa.Column("setup_name", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("update", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_boot_setups_machine_id_machines"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["setup_uuid"],
            ["image_setups.uuid"],
            name=op.f("fk_boot_setups_setup_uuid_image_setups"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_boot_setups")),
    )
    with op.batch_alter_table("boot_setups", schema=None) as batch_op:
        batch_op.create_index("ix_boot_setups_machine_state", ["machine_id", "state"], unique=False)

    op.create_table(
        "machine_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_machine_logs_machine_id_machines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_logs")),
    )
    with op.batch_alter_table("machine_logs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_machine_logs_machine_id"), ["machine_id"], unique=False
        )

    op.create_table(
        "setup_images",
        sa.Column("setup_uuid", sa.String(length=36), nullable=False),
        sa.Column("image_uuid", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("update", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_uuid", "version"],
            ["image_versions.image_uuid", "image_versions.version"],
            name=op.f("fk_setup_images_image_uuid_image_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["setup_uuid"],
            ["image_setups.uuid"],
            name=op.f("fk_setup_images_setup_uuid_image_setups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("setup_uuid", "image_uuid", name=op.f("pk_setup_images")),
    )
    op.create_table(
        "boot_setup_images",
        sa.Column("boot_setup_id", sa.Integer(), nullable=False),
        sa.Column("image_uuid", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("update", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["boot_setup_id"],
            ["boot_setups.id"],
            name=op.f("fk_boot_setup_images_boot_setup_id_boot_setups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_uuid", "version"],
            ["image_versions.image_uuid", "image_versions.version"],
            name=op.f("fk_boot_setup_images_image_uuid_image_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("boot_setup_id", "image_uuid", name=op.f("pk_boot_setup_images")),
    )


def downgrade() -> None:

    op.drop_table("boot_setup_images")
    op.drop_table("setup_images")
    with op.batch_alter_table("machine_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_machine_logs_machine_id"))

    op.drop_table("machine_logs")
    with op.batch_alter_table("boot_setups", schema=None) as batch_op:
        batch_op.drop_index("ix_boot_setups_machine_state")

    op.drop_table("boot_setups")
    op.drop_table("image_versions")
    with op.batch_alter_table("image_setups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_setups_owner"))

    op.drop_table("image_setups")
