"""the erase policy: what each machine erases when another user's work
comes, whose data its disks may hold, and what each work erased

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 19:50:00

machines gain erase ("metadata" for every machine) and last_user_id, set
here from the owner of each machine's last finished work, so that an
upgrade does not make the next work of a machine's usual user wipe its
other disks; a machine with no finished work has none, as a new one.
boot_setups gain what a work asked for and what was decided when it was
taken.  Plain ADD COLUMN (the reference to users is nullable, which
SQLite allows in place).
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "machines",
        sa.Column("erase", sa.String(8), server_default="metadata", nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column that refers to another table (null by
        # default) in place; alembic would rebuild the table, which the
        # rows referring to machines would not survive.
        op.execute("ALTER TABLE machines ADD COLUMN last_user_id INTEGER REFERENCES users (id)")
    else:
        op.add_column(
            "machines",
            sa.Column(
                "last_user_id",
                sa.Integer(),
                sa.ForeignKey("users.id"),
                nullable=True,
            ),
        )
    op.add_column("boot_setups", sa.Column("erase_asked", sa.String(8), nullable=True))
    op.add_column("boot_setups", sa.Column("erase", sa.String(8), nullable=True))
    op.add_column(
        "boot_setups",
        sa.Column("erase_reason", sa.String(255), server_default="", nullable=False),
    )
    op.add_column(
        "boot_setups",
        sa.Column("new_user", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.execute(
        """
        UPDATE machines SET last_user_id = (
            SELECT b.owner_id FROM boot_setups b
            WHERE b.machine_id = machines.id AND b.state IN ('done', 'failed')
            ORDER BY b.finished_at DESC, b.id DESC LIMIT 1
        )
        """
    )


def downgrade() -> None:
    op.drop_column("boot_setups", "new_user")
    op.drop_column("boot_setups", "erase_reason")
    op.drop_column("boot_setups", "erase")
    op.drop_column("boot_setups", "erase_asked")
    op.drop_column("machines", "last_user_id")
    op.drop_column("machines", "erase")
