"""chunks: what indexing a version into the chunk store found (its chunk
count, its distinct chunks' bytes, the bytes it shares with its parent);
NULL until it is indexed

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 21:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

COLUMNS = ("chunks", "chunk_bytes", "shared_bytes")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("image_versions", sa.Column(name, sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image_versions") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
