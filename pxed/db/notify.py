"""Hearing other servers' writes: PostgreSQL ``LISTEN`` on the channel
DBPool's writes to watched tables notify (pxed.db.pool.CHANNEL).

One connection of its own, in autocommit, waited on by a thread of its own
(a notification arrives on an idle connection; the pool's threads run
queries).  Like ``DBPool.watch``, each component says which tables it
depends on and hears only of writes to them.  Each time it starts
listening (and again after a lost connection) it tells everyone: what was
said before was not heard."""

from __future__ import annotations

import threading

from twisted.application.service import Service
from twisted.logger import Logger

from pxed.db.pool import CHANNEL, DBPool, Watcher

log = Logger()

# Seconds between checks of the stop flag, and before connecting again.
POLL = 0.5
RETRY = 2.0


class ChangeListener(Service):
    """Calls the watchers on the reactor thread when another server wrote
    to their tables."""

    name = "db-listen"

    def __init__(self, db: DBPool, reactor) -> None:
        self._engine = db.engine
        self._ours = db.server_id
        self._watchers: list[tuple[frozenset[str], Watcher]] = []
        self._reactor = reactor
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.heard = 0  # notifications from others (tests)

    def watch(self, tables: frozenset[str], callback: Watcher) -> None:
        self._watchers.append((tables, callback))

    def _heard(self, payload: str | None) -> None:
        """On the reactor thread: *payload* from another server, or None
        for "anything may have changed"."""
        if payload is None:
            written = frozenset(t for tables, _ in self._watchers for t in tables)
        else:
            _, _, names = payload.partition(" ")
            written = frozenset(names.split(",")) if names else frozenset()
        for tables, callback in self._watchers:
            if payload is None or tables & written:
                callback(written)

    def startService(self) -> None:
        super().startService()
        if self._engine.dialect.name != "postgresql":
            return  # one server per SQLite database: nobody else writes
        self._stop.clear()
        self._thread = threading.Thread(target=self._listen, name="pxed-db-listen", daemon=True)
        self._thread.start()

    def stopService(self) -> None:
        super().stopService()
        self._stop.set()
        # The thread notices within POLL seconds and closes its connection;
        # nothing waits for it (a daemon thread, holding nothing of ours).
        self._thread = None

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self._engine.raw_connection()
            except Exception as e:
                log.warn("listening for other servers' changes: {error}", error=str(e))
                self._stop.wait(RETRY)
                continue
            try:
                conn = raw.driver_connection
                raw.detach()  # ours alone, never back to the pool
                conn.rollback()  # the pool's ping may have begun one
                conn.autocommit = True
                conn.execute(f"LISTEN {CHANNEL}")
                # What was written before LISTEN took effect was not heard.
                self._reactor.callFromThread(self._heard, None)
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=POLL):
                        if note.payload.partition(" ")[0] != self._ours:
                            self.heard += 1
                            self._reactor.callFromThread(self._heard, note.payload)
            except Exception as e:
                if not self._stop.is_set():
                    log.warn("listening for other servers' changes: {error}", error=str(e))
                    self._stop.wait(RETRY)
            finally:
                raw.close()
