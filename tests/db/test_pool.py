"""The DB pool runs queries off the reactor thread, one transaction each."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor

from pxed.db import migrate
from pxed.db.pool import DBPool, make_engine
from pxed.db.schema import events


@pytest_twisted.async_yield_fixture
async def pool(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'p.sqlite'}")
    migrate.prepare(engine)
    p = DBPool(engine, reactor)
    p.startService()
    yield p
    await p.stopService()


@pytest_twisted.ensureDeferred
async def test_runs_on_its_own_thread(pool):
    name = await pool.run(lambda conn: threading.current_thread().name)
    assert name != threading.current_thread().name
    assert "pxed-db" in name


@pytest_twisted.ensureDeferred
async def test_sqlite_settings(pool):
    def pragmas(conn):
        return [
            conn.exec_driver_sql(f"PRAGMA {p}").scalar()
            for p in ("journal_mode", "foreign_keys", "busy_timeout")
        ]

    assert await pool.run(pragmas) == ["wal", 1, 5000]


@pytest_twisted.ensureDeferred
async def test_error_rolls_back(pool):
    def insert_then_fail(conn):
        conn.execute(
            events.insert().values(
                at=sa.func.now(), actor="a", action="x", target_type="t", target="1"
            )
        )
        raise ValueError("boom")

    with pytest.raises(ValueError):
        await pool.run(insert_then_fail)
    count = await pool.run(
        lambda c: c.execute(sa.select(sa.func.count()).select_from(events)).scalar()
    )
    assert count == 0
