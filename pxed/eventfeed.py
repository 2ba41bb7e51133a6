"""The live feed behind ``GET /events/stream``: one reader for all open
streams, tailing the audit events, management OS log lines, deploy
progress and build logs, and handing each batch to every stream (each
keeps what its caller may see).

It reads when a write of ours commits (``DBPool.watch``), when another
server writes (PostgreSQL ``NOTIFY``, pxed.db.notify) and, as a safety
net for writers that announce nothing (``pxed-admin`` on SQLite), every
``poll`` seconds while a stream is open.  Reads never overlap: writes that
land during a read are picked up by the next one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pxed.db import feed
from pxed.db.feed import Batch, Cursor, Moved
from pxed.db.pool import DBPool
from pxed.db.progress import Progress
from pxed.errors import ServiceUnavailable
from pxed.metrics import Metrics

log = Logger()

TABLES = frozenset({"events", "machine_logs", "work_progress", "build_logs"})


class Stream(Protocol):
    """One open ``GET /events/stream``."""

    # Builds whose log lines it wants.
    builds: frozenset[int]

    def deliver(self, batch: Batch, progress: Moved) -> None:
        """Send what of *batch* (and the machines' *progress* that changed)
        its caller may see."""

    def keepalive(self) -> None: ...

    def close(self) -> None:
        """The server stops: end the answer."""


class EventFeed(Service):
    name = "event-feed"

    def __init__(
        self,
        db: DBPool,
        reactor,
        max_streams: int,
        keepalive: float = 15.0,
        poll: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._reactor = reactor
        self._max = max_streams
        self._poll = poll
        self._streams: set[Stream] = set()
        self._cursor: Cursor | None = None
        # Last seq read per build followed.
        self._build_after: dict[int, int] = {}
        self._sent_progress: dict[int, Progress | None] = {}
        self._reading = False
        self._dirty = False
        self._keepalive = keepalive
        self._loops: list[LoopingCall] = []
        if metrics is not None:
            metrics.event_streams.set_function(lambda: len(self._streams))

    @property
    def streams(self) -> int:
        return len(self._streams)

    def startService(self) -> None:
        super().startService()
        self._db.watch(TABLES, self.changed)
        for every, call in ((self._poll, self.changed), (self._keepalive, self._keep)):
            loop = LoopingCall(call)
            loop.clock = self._reactor
            loop.start(every, now=False)
            self._loops.append(loop)

    def stopService(self) -> None:
        super().stopService()
        self._db.unwatch(self.changed)
        for loop in self._loops:
            loop.stop()
        self._loops.clear()
        for stream in list(self._streams):
            stream.close()
        self._streams.clear()

    async def add(self, stream: Stream, build_after: dict[int, int]) -> None:
        """Start sending to *stream*; its builds' lines after the given seq."""
        if self._cursor is None:
            cursor = await self._db.read(feed.thd_head)
            # Another stream may have set it meanwhile: keep the older.
            if self._cursor is None:
                self._cursor = cursor
        # Counted after the wait, so streams opened together cannot pass it.
        if len(self._streams) >= self._max:
            raise ServiceUnavailable(
                f"{self._max} event streams are open (max_event_streams); try again later"
            )
        for build_id, after in build_after.items():
            self._build_after[build_id] = min(after, self._build_after.get(build_id, after))
        self._streams.add(stream)

    def remove(self, stream: Stream) -> None:
        self._streams.discard(stream)
        if not self._streams:
            # Nobody listens: start from the head again when someone does.
            self._cursor = None
            self._sent_progress.clear()
        followed = {b for s in self._streams for b in s.builds}
        for build_id in list(self._build_after):
            if build_id not in followed:
                del self._build_after[build_id]

    def changed(self, _tables: Iterable[str] = ()) -> None:
        if not self._streams or not self.running:
            return
        self._dirty = True
        if not self._reading:
            Deferred.fromCoroutine(self._read())

    def _keep(self) -> None:
        for stream in list(self._streams):
            stream.keepalive()

    async def _read(self) -> None:
        self._reading = True
        try:
            while self._dirty and self._streams and self._cursor is not None:
                self._dirty = False
                batch = await self._db.read(feed.thd_since, self._cursor, dict(self._build_after))
                if self._cursor is None:  # every stream went meanwhile
                    break
                self._cursor = batch.cursor
                for build_id, lines in batch.build_lines.items():
                    if build_id in self._build_after:
                        self._build_after[build_id] = lines[-1][0]
                moved = {
                    m: (mac, p)
                    for m, (mac, p) in batch.progress.items()
                    if self._sent_progress.get(m, False) != p
                }
                self._sent_progress.update({m: p for m, (_, p) in moved.items()})
                for stream in list(self._streams):
                    stream.deliver(batch, moved)
                self._dirty = self._dirty or batch.more
        except Exception as e:
            # The database away or locked: the next tick tries again.
            log.warn("event stream: reading what changed failed: {error}", error=str(e))
        finally:
            self._reading = False
