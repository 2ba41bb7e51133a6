"""Hearing other servers' writes: PostgreSQL ``LISTEN`` on the channel
DBPool's writes to watched tables notify (pxed.db.pool.CHANNEL).

One connection of its own, in autocommit, waited on by a thread of its own
(a notification arrives on an idle connection; the pool's threads run
queries).  Each time it starts listening (and again after a lost
connection) it reports a change: what was said before was not heard."""

from __future__ import annotations

import threading
from collections.abc import Callable

from twisted.application.service import Service
from twisted.logger import Logger

from pxed.db.pool import CHANNEL, DBPool

log = Logger()

# Seconds between checks of the stop flag, and before connecting again.
POLL = 0.5
RETRY = 2.0


class ChangeListener(Service):
    """Calls *changed* on the reactor thread when another server wrote."""

    name = "db-listen"

    def __init__(self, db: DBPool, changed: Callable[[], None], reactor) -> None:
        self._engine = db.engine
        self._ours = db.server_id
        self._changed = changed
        self._reactor = reactor
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.heard = 0  # notifications from others (tests)

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
                self._reactor.callFromThread(self._changed)
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=POLL):
                        if note.payload != self._ours:
                            self.heard += 1
                            self._reactor.callFromThread(self._changed)
            except Exception as e:
                if not self._stop.is_set():
                    log.warn("listening for other servers' changes: {error}", error=str(e))
                    self._stop.wait(RETRY)
            finally:
                raw.close()
