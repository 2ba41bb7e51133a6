"""The DB pool runs queries off the reactor thread, one transaction each; on
SQLite and on PostgreSQL (``database_url``)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor

from pxed.db import migrate
from pxed.db.pool import DEFAULT_BUSY_TIMEOUT, DBPool, is_busy, is_full, make_engine
from pxed.db.schema import events, users


@pytest_twisted.async_yield_fixture
async def pool(database_url):
    engine = make_engine(database_url)
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


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_sqlite_settings(pool):
    def pragmas(conn):
        return [
            conn.exec_driver_sql(f"PRAGMA {p}").scalar()
            for p in ("journal_mode", "foreign_keys", "busy_timeout")
        ]

    assert await pool.run(pragmas) == ["wal", 1, int(DEFAULT_BUSY_TIMEOUT * 1000)]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_postgres_settings(pool):
    def settings(conn):
        # pg_settings.setting is in the setting's unit, milliseconds here.
        query = sa.text("SELECT setting FROM pg_settings WHERE name = :name")
        return [
            conn.execute(query, {"name": name}).scalar()
            for name in ("lock_timeout", "transaction_read_only", "transaction_isolation")
        ]

    wait = str(int(DEFAULT_BUSY_TIMEOUT * 1000))
    assert await pool.run(settings) == [wait, "off", "read committed"]
    assert await pool.read(settings) == [wait, "on", "repeatable read"]


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


@pytest_twisted.ensureDeferred
async def test_reads_have_their_own_threads(pool):
    writer = await pool.run(lambda conn: threading.current_thread().name)
    reader = await pool.read(lambda conn: threading.current_thread().name)
    assert "pxed-db-read" in reader
    assert reader != writer


@pytest_twisted.ensureDeferred
async def test_read_path_refuses_writes(pool):
    def insert(conn):
        conn.execute(
            events.insert().values(
                at=sa.func.now(), actor="a", action="x", target_type="t", target="1"
            )
        )

    # SQLite: "attempt to write a readonly database"; PostgreSQL: "cannot
    # execute INSERT in a read-only transaction".
    with pytest.raises(sa.exc.DBAPIError, match=r"readonly|read-only"):
        await pool.read(insert)


@pytest_twisted.ensureDeferred
async def test_read_is_one_snapshot(pool):
    """A read thd's queries see one state even if a write commits between
    them (pysqlite alone would BEGIN only before a write)."""
    count = sa.select(sa.func.count()).select_from(events)
    committed = threading.Event()

    def insert(conn):
        conn.execute(
            events.insert().values(
                at=sa.func.now(), actor="a", action="x", target_type="t", target="1"
            )
        )

    def read_twice(conn):
        first = conn.execute(count).scalar()
        with pool.engine.begin() as other:  # another connection writes meanwhile
            insert(other)
        committed.set()
        return first, conn.execute(count).scalar()

    assert await pool.read(read_twice) == (0, 0)
    assert committed.is_set()
    assert await pool.read(lambda c: c.execute(count).scalar()) == 1


def _hold_write_lock(engine):
    """Another process's writer, as far as the database can tell: its own
    connection holding SQLite's write lock, or on PostgreSQL a lock on
    events that lets reads in and keeps writes out, until released."""
    if engine.dialect.name == "sqlite":
        holder = sqlite3.connect(engine.url.database, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        return holder
    holder = sa.create_engine(engine.url).connect()
    holder.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
    return holder


@pytest_twisted.ensureDeferred
async def test_busy_write_fails_as_busy_and_reads_go_on(pool):
    holder = _hold_write_lock(pool.engine)
    try:

        def insert(conn):
            conn.execute(
                events.insert().values(
                    at=sa.func.now(), actor="a", action="x", target_type="t", target="1"
                )
            )

        write = pool.run(insert)
        # Queued behind the waiting write on its thread, a read would not
        # answer until the write gave up; on the read path it answers first.
        order = []
        write.addBoth(lambda r: order.append("write") or r)
        n = await pool.read(lambda c: c.execute(sa.select(sa.func.count()).select_from(events)))
        order.append("read")
        assert n is not None
        with pytest.raises(sa.exc.OperationalError) as raised:
            await write
        assert is_busy(raised.value)
        assert order == ["read", "write"]
        # SQLite has one write lock for the whole file: no writer could
        # start.  PostgreSQL's lock is on one table, other writes go on.
        held = "busy" if pool.engine.dialect.name == "sqlite" else "ok"
        assert await pool.health(5.0) == held
    finally:
        holder.rollback()
        holder.close()
    assert await pool.health(5.0) == "ok"


def test_is_busy_and_is_full_tell_errors_apart(tmp_path):
    import errno

    def wrapped(orig):
        return sa.exc.OperationalError("stmt", {}, orig)

    assert is_busy(wrapped(sqlite3.OperationalError("database is locked")))
    assert not is_busy(wrapped(sqlite3.OperationalError("no such table: x")))
    assert is_full(wrapped(sqlite3.OperationalError("database or disk is full")))
    assert is_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_full(OSError(errno.EACCES, "Permission denied"))

    class PgError(Exception):
        def __init__(self, sqlstate):
            self.sqlstate = sqlstate

    assert is_busy(wrapped(PgError("55P03")))
    assert not is_busy(wrapped(PgError("42P01")))
    assert is_full(wrapped(PgError("53100")))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_a_check_raced_by_another_writer_runs_again(pool):
    """Two writers both find no row, then both insert it: the one whose
    insert breaks the unique constraint runs again and finds it.  (SQLite
    has one writer: the race cannot happen there.)"""
    both_checked = threading.Barrier(2, timeout=10)
    runs: list[str] = []

    def create(conn, who: str) -> str:
        runs.append(who)
        found = conn.execute(sa.select(users.c.id).where(users.c.username == "carol")).first()
        if runs.count(who) == 1:
            both_checked.wait()
        if found is not None:
            return "exists"
        conn.execute(
            users.insert().values(username="carol", role="user", created_at=dt.datetime.now(dt.UTC))
        )
        return "created"

    first = pool.run(create, "a")
    second = pool.run(create, "b")
    assert sorted([await first, await second]) == ["created", "exists"]
    assert len(runs) == 3
