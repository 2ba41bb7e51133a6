"""The one way to the database: run a function on a dedicated thread pool
inside a transaction and get a Deferred of its (plain, already loaded) result.

Every query is a ``thd_*`` function taking a Connection first.  Nothing lazy
crosses back to the reactor thread: query functions return dataclasses,
dicts or scalars."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


def make_engine(url: str) -> sa.Engine:
    """An engine with the settings pxed relies on for each backend."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets readers (other processes, sqlite3 CLI) in while we
            # write; busy_timeout waits instead of failing with "database is
            # locked"; SQLite leaves foreign keys off unless asked.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def pool_threads(engine: sa.Engine) -> int:
    # SQLite has one writer; one thread serialises access without lock errors.
    return 1 if engine.dialect.name == "sqlite" else 4


class DBPool(Service):
    """A Service owning the engine and its thread pool."""

    name = "db"

    def __init__(self, engine: sa.Engine, reactor: IReactorThreads) -> None:
        self.engine = engine
        self._reactor = reactor
        n = pool_threads(engine)
        self._threadpool = ThreadPool(minthreads=n, maxthreads=n, name="pxed-db")

    def startService(self) -> None:
        super().startService()
        self._threadpool.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        # Let queued queries finish on their thread, then drop connections.
        d = deferToThreadPool(self._reactor, self._threadpool, self.engine.dispose)
        d.addBoth(lambda _: self._threadpool.stop())
        return d

    def run(self, thd: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``thd(conn, *args, **kwargs)`` in one transaction, off the
        reactor thread; commit if it returns, roll back if it raises."""
        return deferToThreadPool(
            self._reactor, self._threadpool, self._in_transaction, thd, args, kwargs
        )

    def _in_transaction(self, thd: Callable[..., T], args: tuple, kwargs: dict) -> T:
        with self.engine.begin() as conn:
            return thd(conn, *args, **kwargs)


def thd_ping(conn: sa.Connection) -> None:
    """The cheapest query: /healthz answers once the database does."""
    conn.execute(sa.text("SELECT 1"))
