"""The tables, in SQLAlchemy Core.  Migrations under migrations/ must produce
exactly this; tests/db/test_migrations.py holds the two together."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator):
    """Stored as naive UTC (portable across SQLite and PostgreSQL), handed
    out as aware UTC datetimes."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


images = sa.Table(
    "images",
    metadata,
    sa.Column("uuid", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    # None for images that belong to the system, such as a machine's own image.
    sa.Column("owner", sa.String(64), nullable=True, index=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("disk_uuid", sa.String(64), nullable=False, server_default=""),
    sa.Column("compression", sa.String(16), nullable=False, server_default="none"),
    sa.Column("file_type", sa.String(16), nullable=False, server_default="raw"),
    sa.Column("filesystem", sa.String(16), nullable=False, server_default="raw"),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

machines = sa.Table(
    "machines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("architecture", sa.String(16), nullable=False),
    sa.Column("managed", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(32), nullable=False, server_default="new"),
    sa.Column("last_seen", UTCDateTime, nullable=True),
    sa.Column(
        "image_uuid",
        sa.String(36),
        sa.ForeignKey("images.uuid", ondelete="RESTRICT"),
        nullable=False,
    ),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

machine_macs = sa.Table(
    "machine_macs",
    metadata,
    sa.Column("mac", sa.String(17), primary_key=True),
    sa.Column(
        "machine_id",
        sa.Integer,
        sa.ForeignKey("machines.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    # Keeps the order in which the MACs were given, so answers are stable.
    sa.Column("position", sa.Integer, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    # Username, "machine:<mac>", or "system".
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    # What the event is about, e.g. ("machine", "3") or ("user", "alice").
    sa.Column("target_type", sa.String(32), nullable=False),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_events_target", "target_type", "target"),
)
