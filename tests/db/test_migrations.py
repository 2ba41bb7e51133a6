"""The shipped migrations and the schema in code agree, and startup creates,
upgrades or refuses a database as promised."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from pxed.db import migrate
from pxed.db.pool import make_engine
from pxed.db.schema import metadata


@pytest.fixture
def engine(database_url):
    e = make_engine(database_url)
    yield e
    e.dispose()


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_migrations_produce_the_models(engine):
    migrate.prepare(engine)
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), metadata
        )
    assert diff == []


def test_empty_database_is_created_even_without_migrate(engine):
    assert "created" in migrate.prepare(engine, migrate=False)
    assert migrate.current(engine) == migrate.head()
    assert "current" in migrate.prepare(engine, migrate=False)


def test_every_revision_upgrades_to_head_and_back(engine):
    for rev in revisions():
        migrate.upgrade(engine, rev)
        assert migrate.current(engine) == rev
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "base")
    assert sa.inspect(engine).get_table_names() == ["alembic_version"]


def test_older_schema_is_upgraded_or_refused(engine):
    if len(revisions()) < 2:
        pytest.skip("only one revision so far")
    first = revisions()[0]
    migrate.upgrade(engine, first)
    with pytest.raises(migrate.SchemaError, match="pxed-admin db upgrade"):
        migrate.prepare(engine, migrate=False)
    assert migrate.current(engine) == first
    assert "upgraded" in migrate.prepare(engine, migrate=True)
    assert migrate.current(engine) == migrate.head()


def test_unknown_revision_is_refused(engine):
    migrate.prepare(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff'"))
    with pytest.raises(migrate.SchemaError, match="unknown"):
        migrate.prepare(engine)


def test_foreign_tables_are_not_touched(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE other (x INTEGER)"))
    with pytest.raises(migrate.SchemaError, match="no pxed schema"):
        migrate.prepare(engine)
