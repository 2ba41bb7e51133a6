"""image_versions.file: the name of each version's file

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 22:50:00

A replaced version's bytes go to a new file whose name the row records; the
old file is removed after the row is committed.  Existing rows keep the
name they always had, ``<version>.img``.

Plain ALTER TABLE (no batch copy): image_versions is referenced with ON
DELETE CASCADE, and recreating it under SQLite's foreign keys would empty
setup_images and boot_setup_images.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "image_versions",
        sa.Column("file", sa.String(length=255), server_default="", nullable=False),
    )
    op.execute("UPDATE image_versions SET file = CAST(version AS VARCHAR(20)) || '.img'")


def downgrade() -> None:
    # Below 0005 a version's file is always <version>.img: refuse rather
    # than leave rows that name files which are not there.
    renamed = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT count(*) FROM image_versions "
                "WHERE file != CAST(version AS VARCHAR(20)) || '.img'"
            )
        )
        .scalar()
    )
    if renamed:
        raise RuntimeError(
            f"{renamed} replaced version(s) have files not named <version>.img; "
            "rename images/<uuid>/<file> to <version>.img for each before downgrading"
        )
    op.drop_column("image_versions", "file")
