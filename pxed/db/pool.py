"""The one way to the database: run a function on a dedicated thread pool
inside a transaction and get a Deferred of its (plain, already loaded) result.

Every query is a ``thd_*`` function taking a Connection first.  Nothing lazy
crosses back to the reactor thread: query functions return dataclasses,
dicts or scalars.

Writes (``run``) and reads (``read``) have their own threads, so a read never
queues behind a write that waits for a lock.  With SQLite the reads also have
their own connections: under WAL a reader sees the last commit while another
connection (ours or another process's) holds the write lock.  A read
transaction is read-only on every backend (SQLite ``query_only``,
PostgreSQL ``SET TRANSACTION READ ONLY``): a write on the read path fails
instead of slipping past the writer.  It is also one snapshot on every
backend (SQLite's deferred BEGIN, PostgreSQL's REPEATABLE READ).

A component that keeps something in memory built from the database (the
boot view, the event feed) asks to be told of the writes it depends on:
``watch``, with names of tables, kinds of write or the columns an UPDATE
sets (pxed.db.written).  It is called on the reactor thread before the
writing call's Deferred fires; with PostgreSQL the writing transaction
also sends ``NOTIFY pxed_changes``, naming only what some watcher depends
on, so that other servers on the database hear of it (pxed.db.notify).
What a watcher is given is a ``written.Written``: those names, and the
machines the writes concern when the caller said (``written.concerning``).

A write that cannot get its lock within ``busy_timeout`` seconds fails with
an OperationalError that ``is_busy`` recognises; the web layer answers it
with 503 and ``Retry-After``.

How long each call waited for a thread and how long it ran are recorded
in the server's pxed.metrics (``pxed_db_wait_seconds``,
``pxed_db_query_seconds``)."""

from __future__ import annotations

import errno
import sqlite3
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from twisted.application.service import Service
from twisted.internet.defer import Deferred, TimeoutError, gatherResults
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from pxed.db import written as written_names
from pxed.metrics import Metrics

T = TypeVar("T")

# The PostgreSQL channel watched writes are announced on; the payload is
# the writing pool's ``server_id`` (so a server can ignore its own), a
# space and the watched names written (pxed.db.written), comma-separated.
CHANNEL = "pxed_changes"
_WRITTEN = "pxed.written"
Watcher = Callable[[frozenset[str]], None]

# Seconds a statement waits for a lock held by another connection (SQLite's
# busy_timeout, PostgreSQL's lock_timeout) before it fails as busy.  The
# setting db_busy_timeout overrides it.
DEFAULT_BUSY_TIMEOUT = 1.0
# How long /healthz's probe may wait for the write lock: long enough for an
# ordinary write of ours to commit, short enough to answer at once.
PROBE_LOCK_WAIT = 0.2

# SQLite's result codes (sqlite3.Error.sqlite_errorcode, primary code in the
# low byte) and PostgreSQL's SQLSTATEs that mean "try again later".
_SQLITE_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_SQLITE_FULL = 13
_PG_BUSY = {"55P03", "40001", "40P01", "57014"}  # lock_not_available,
# serialization_failure, deadlock_detected, query_canceled (statement_timeout)
_PG_FULL = "53100"  # disk_full


def _is_sqlite_file(url: sa.URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")


def make_engine(url: str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> sa.Engine:
    """An engine with the settings pxed relies on for each backend."""
    parsed = sa.engine.make_url(url)
    wait_ms = int(busy_timeout * 1000)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets readers (our read connections, other processes,
            # sqlite3 CLI) in while we write; busy_timeout waits that long
            # for another writer, then fails as busy; SQLite leaves foreign
            # keys off unless asked.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={wait_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        # The same bound for PostgreSQL's lock waits, set for the session at
        # connect time (libpq's options); the URL's own options are kept.
        options = parsed.query.get("options", "")
        if isinstance(options, tuple):
            options = " ".join(options)
        options = f"{options} -c lock_timeout={wait_ms}".strip()
        return sa.create_engine(url, pool_pre_ping=True, connect_args={"options": options})
    return sa.create_engine(url, pool_pre_ping=True)


def _read_engine(engine: sa.Engine, busy_timeout: float) -> sa.Engine:
    """The engine reads use: for an SQLite file its own connections, each
    transaction a real (deferred) BEGIN so that a thd function's queries
    see one snapshot; otherwise the same engine."""
    if not _is_sqlite_file(engine.url):
        return engine
    reader = sa.create_engine(engine.url, connect_args={"check_same_thread": False})
    wait_ms = int(busy_timeout * 1000)

    @sa.event.listens_for(reader, "connect")
    def _read_pragmas(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite would only BEGIN before a write, that is never here: we
        # issue BEGIN ourselves (below) so a transaction is one snapshot.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={wait_ms}")
        cur.execute("PRAGMA query_only=ON")
        cur.close()

    @sa.event.listens_for(reader, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return reader


def pool_threads(engine: sa.Engine) -> int:
    # SQLite has one writer; one thread serialises access without lock errors.
    return 1 if engine.dialect.name == "sqlite" else 4


def read_threads(engine: sa.Engine) -> int:
    return 2 if engine.dialect.name == "sqlite" else 4


def _sqlstate(orig: BaseException) -> str | None:
    # psycopg 3 says sqlstate, psycopg2 pgcode.
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_busy(error: BaseException) -> bool:
    """The database refused for now (a lock held elsewhere): try again."""
    if not isinstance(error, sa.exc.DBAPIError):
        return False
    orig = error.orig
    if isinstance(orig, sqlite3.Error):
        return _sqlite_busy(orig)
    return _sqlstate(orig) in _PG_BUSY if orig is not None else False


def _sqlite_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _SQLITE_BUSY
    text = str(error)
    return "database is locked" in text or "database table is locked" in text


def is_full(error: BaseException) -> bool:
    """The database (or the disk it is on) has no room for the write."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(error, sa.exc.DBAPIError):
        return False
    orig = error.orig
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF == _SQLITE_FULL
        return "database or disk is full" in str(orig)
    return _sqlstate(orig) == _PG_FULL if orig is not None else False


class DBPool(Service):
    """A Service owning the engine and its thread pools (writes, reads)."""

    name = "db"

    def __init__(
        self,
        engine: sa.Engine,
        reactor: IReactorThreads,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.read_engine = _read_engine(engine, busy_timeout)
        self._reactor = reactor
        n = pool_threads(engine)
        self._threadpool = ThreadPool(minthreads=n, maxthreads=n, name="pxed-db")
        r = read_threads(engine)
        self._read_threadpool = ThreadPool(minthreads=r, maxthreads=r, name="pxed-db-read")
        self._watchers: list[tuple[frozenset[str], Watcher]] = []
        self.server_id = uuid.uuid4().hex
        sa.event.listen(engine, "after_execute", _note_written)
        metrics = metrics if metrics is not None else Metrics()
        self._write_timing = (metrics.db_wait.labels("write"), metrics.db_query.labels("write"))
        self._read_timing = (metrics.db_wait.labels("read"), metrics.db_query.labels("read"))

    def watch(self, names: frozenset[str], callback: Watcher) -> None:
        """Call *callback* (with the names written) after every committed
        write of ours that *names* name: ``table`` for any write,
        ``table:insert``, ``table:update`` or ``table:delete`` for one kind,
        ``table.column`` for an UPDATE that sets that column."""
        self._watchers.append((names, callback))

    def unwatch(self, callback: Watcher) -> None:
        self._watchers = [(t, c) for t, c in self._watchers if c != callback]

    def startService(self) -> None:
        super().startService()
        self._threadpool.start()
        self._read_threadpool.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()

        # Let queued queries finish on their thread, then drop connections.
        def drained(pool: ThreadPool, engine: sa.Engine) -> Deferred[None]:
            d = deferToThreadPool(self._reactor, pool, engine.dispose)
            d.addBoth(lambda _: pool.stop())
            return d

        readers = drained(self._read_threadpool, self.read_engine)
        writers = drained(self._threadpool, self.engine)
        d = gatherResults([readers, writers], consumeErrors=True)
        d.addCallback(lambda _: None)
        return d

    def run(self, thd: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``thd(conn, *args, **kwargs)`` in one transaction, off the
        reactor thread; commit if it returns, roll back if it raises."""
        return deferToThreadPool(
            self._reactor,
            self._threadpool,
            _timed,
            self._write_timing,
            time.monotonic(),
            self._in_transaction,
            thd,
            args,
            kwargs,
        )

    def read(self, thd: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Like ``run`` for a *thd* that only reads: one read-only
        transaction on the read threads, never waiting behind a write."""
        return deferToThreadPool(
            self._reactor,
            self._read_threadpool,
            _timed,
            self._read_timing,
            time.monotonic(),
            self._in_read_transaction,
            thd,
            args,
            kwargs,
        )

    def _in_transaction(self, thd: Callable[..., T], args: tuple, kwargs: dict) -> T:
        try:
            return self._commit(thd, args, kwargs)
        except sa.exc.IntegrityError:
            # A thd checks before it writes ("no user of that name yet?"),
            # but with more than one writer (PostgreSQL's threads, another
            # server) a concurrent transaction can commit the same row in
            # between: the check, run again, now sees it and answers as it
            # would have (a conflict), instead of a constraint error.
            return self._commit(thd, args, kwargs)
        except sa.exc.DBAPIError as e:
            if not (is_full(e) and _is_sqlite_file(self.engine.url)):
                raise
            # A full disk: the WAL could not grow.  Once its frames are in
            # the database file, the next write starts the WAL again from
            # its beginning, in space the file already has.  Try once more
            # (the transaction rolled back): a DELETE that frees space can
            # then commit on a disk with no byte left.
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(RESTART)")
            return self._commit(thd, args, kwargs)

    def _commit(self, thd: Callable[..., T], args: tuple, kwargs: dict) -> T:
        with self.engine.begin() as conn:
            conn.info.pop(_WRITTEN, None)
            conn.info.pop(written_names.MACHINES, None)
            result = thd(conn, *args, **kwargs)
            written = written_names.Written(
                conn.info.pop(_WRITTEN, ()), conn.info.pop(written_names.MACHINES, None)
            )
            watched = [c for tables, c in self._watchers if tables & written]
            if watched and conn.dialect.name == "postgresql":
                # Delivered when (and only if) this transaction commits; it
                # names only the watched names written, so that another
                # server reloads only what depends on them.
                names = sorted({t for tables, _ in self._watchers for t in tables & written})
                payload = f"{self.server_id} {','.join(names)}"
                conn.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))
        # Queued before this call's own result: whoever sees the write
        # succeed finds the watchers told.
        for callback in watched:
            self._reactor.callFromThread(callback, written)  # type: ignore[attr-defined]
        return result

    def _in_read_transaction(self, thd: Callable[..., T], args: tuple, kwargs: dict) -> T:
        with self.read_engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for the whole transaction, as SQLite's reads
                # have; read committed would take a new one per statement.
                # A read-only repeatable read never fails to serialise.
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return thd(conn, *args, **kwargs)

    async def health(self, timeout: float) -> Literal["ok", "busy"]:
        """ "ok" if the database answers a read and a writer could start now,
        "busy" if either would wait (answered within *timeout* seconds).
        Anything else (a database that is gone) raises."""
        d = self.read(thd_ping)
        if _is_sqlite_file(self.engine.url):
            d.addCallback(lambda _: self._write_lock_free())
        d.addTimeout(timeout, self._reactor)  # type: ignore[arg-type]
        try:
            free = await d
        except TimeoutError:
            return "busy"
        except sa.exc.DBAPIError as e:
            if is_busy(e):
                return "busy"
            raise
        return "ok" if free is not False else "busy"

    def _write_lock_free(self) -> Deferred[bool]:
        return deferToThreadPool(
            self._reactor, self._read_threadpool, _sqlite_write_lock_free, self.engine.url.database
        )


def _timed(timing: tuple[Any, Any], submitted: float, fn: Callable[..., T], *args: Any) -> T:
    """On the pool's thread: *fn*, with the time it waited for the thread
    (since *submitted*) and the time it ran recorded in *timing*'s
    histograms (pxed.metrics: wait, query)."""
    started = time.monotonic()
    wait, query = timing
    wait.observe(started - submitted)
    try:
        return fn(*args)
    finally:
        query.observe(time.monotonic() - started)


def _sqlite_write_lock_free(path: str) -> bool:
    """Whether a writer could take SQLite's write lock within PROBE_LOCK_WAIT
    (taken and given back at once, on a connection of its own: our writer's
    thread may be the one waiting)."""
    conn = sqlite3.connect(path, timeout=PROBE_LOCK_WAIT, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as e:
        if _sqlite_busy(e):
            return False
        raise
    finally:
        conn.close()


def _note_written(
    conn: sa.Connection, clause: Any, multiparams: Any, params: Any, _options: Any, result: Any
) -> None:
    """Remember what a transaction wrote (for ``DBPool.watch``); a
    statement that changed no row (-1: not known) wrote nothing."""
    if isinstance(clause, sa.sql.dml.UpdateBase) and result.rowcount != 0:
        rows = [*(multiparams or ()), *([params] if params else ())]
        conn.info.setdefault(_WRITTEN, set()).update(written_names.names(clause, rows))


def thd_ping(conn: sa.Connection) -> None:
    """The cheapest query: /healthz answers once the database does."""
    conn.execute(sa.text("SELECT 1"))
