"""builds carry the server running them and its last heartbeat

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 00:00:00

With several servers on one database a build belongs to the server that
accepted it (``server``), which renews ``heartbeat_at`` while it lives;
another server takes over (queued) or fails (running) a build whose
heartbeat is older than ``build_lease``.  Existing builds have neither: a
server starting on the upgraded database treats them as its own.  Plain
ALTER TABLE, no batch copy (build_logs references builds ON DELETE
CASCADE; SQLite adds and drops these columns in place).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("builds", sa.Column("server", sa.String(length=255), nullable=True))
    op.add_column("builds", sa.Column("heartbeat_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("builds", "heartbeat_at")
    op.drop_column("builds", "server")
