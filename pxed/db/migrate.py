"""Schema migrations with Alembic, driven from code (no alembic.ini): the
migration scripts ship inside the package."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaError(Exception):
    """The database schema is not one this pxed can use as it is."""


def alembic_config(connection: sa.Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _user_tables(engine: sa.Engine) -> list[str]:
    return [t for t in sa.inspect(engine).get_table_names() if t != "alembic_version"]


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


# The key of the PostgreSQL advisory lock servers starting on one database
# take around the schema check and upgrade (any fixed number: "pxed").
SCHEMA_LOCK = 0x70786564


@contextmanager
def exclusive(engine: sa.Engine) -> Iterator[None]:
    """On PostgreSQL, one server at a time (an advisory lock): servers
    starting at once on one database take turns creating or upgrading the
    schema and creating the first admin.  Elsewhere nothing to wait for."""
    if engine.dialect.name != "postgresql":
        yield
        return
    try:
        lock = engine.connect()
    except sa.exc.OperationalError as e:
        raise SchemaError(f"cannot open database: {e.orig}") from None
    try:
        # Session-level, outside any transaction: held across the work's own
        # transactions on other connections.  lock_timeout does not bound
        # it (a first upgrade may take a while): pg_advisory_lock waits.
        lock.exec_driver_sql("SET lock_timeout = 0")
        lock.exec_driver_sql(f"SELECT pg_advisory_lock({SCHEMA_LOCK})")
        lock.commit()
        yield
    finally:
        # Closing the session (not returning it to the pool, with its
        # lock_timeout changed) releases the lock.
        lock.invalidate()
        lock.close()


def prepare(engine: sa.Engine, migrate: bool = True) -> str:
    """Bring the database to the schema this code expects, or explain why not.

    An empty database is always created.  An older one is upgraded when
    *migrate* is true and refused otherwise.  A newer or unknown one is
    refused.  Returns a short line saying what was done.  Servers starting
    at once take turns (``exclusive``): one creates or upgrades the schema,
    the others then find it current."""
    with exclusive(engine):
        return _prepare(engine, migrate)


def _prepare(engine: sa.Engine, migrate: bool) -> str:
    try:
        rev = current(engine)
        tables = _user_tables(engine)
    except sa.exc.OperationalError as e:
        raise SchemaError(f"cannot open database: {e.orig}") from None
    want = head()
    script = ScriptDirectory.from_config(alembic_config())
    if rev == want:
        return f"database schema is current ({want})"
    if rev is None:
        if tables:
            raise SchemaError(
                "database has tables but no pxed schema version; refusing to touch it"
            )
        upgrade(engine)
        return f"created database schema ({want})"
    try:
        script.get_revision(rev)
    except Exception:
        raise SchemaError(
            f"database schema {rev} is unknown to this pxed (newer version?); refusing to start"
        ) from None
    if not migrate:
        raise SchemaError(
            f"database schema {rev} is older than {want}; run `pxed-admin db upgrade` "
            "or start without --no-migrate"
        )
    upgrade(engine)
    return f"upgraded database schema {rev} -> {want}"
