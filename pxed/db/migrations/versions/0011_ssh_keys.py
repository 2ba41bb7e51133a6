"""users' SSH public keys

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 12:00:00

One new table, user_ssh_keys: the public keys a user keeps in pxed to log
into the machines he deploys.  Nothing existing changes.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_ssh_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("blob", sa.Text(), nullable=False),
        sa.Column("comment", sa.String(length=255), server_default="", nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("bits", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_ssh_keys_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_ssh_keys")),
        sa.UniqueConstraint("user_id", "fingerprint", name=op.f("uq_user_ssh_keys_user_id")),
    )
    op.create_index(op.f("ix_user_ssh_keys_user_id"), "user_ssh_keys", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_user_ssh_keys_user_id"), table_name="user_ssh_keys")
    op.drop_table("user_ssh_keys")
