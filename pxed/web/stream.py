"""``GET /events/stream``: what happens, as server-sent events, for any
client (the dashboard's EventSource, ``pxectl``, curl).

Each stream gets only what its caller may see: machine events and the
management OS's log lines (any signed-in user may read a machine's), the
events of images and setups they own (staff: all), their own user events
(admins: all), and with ``build=ID`` that build's log lines (its image's
owner and staff).  A stream whose client reads too slowly is closed once
``event_stream_backlog`` bytes wait for it; its credential is checked
again at every keep-alive, so a revoked token or an ended session stops
it."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from pxed.db import builds
from pxed.db.feed import Batch, FeedEvent, Moved
from pxed.db.pool import DBPool
from pxed.db.users import User
from pxed.errors import ApiError, BadRequest, NotFound
from pxed.eventfeed import EventFeed
from pxed.web import render
from pxed.web.auth import Authenticator
from pxed.web.auth import user as caller
from pxed.web.body import int_arg, query_args
from pxed.web.imageaccess import ImageAccess
from pxed.web.lookup import machine_or_404
from pxed.web.router import route

log = Logger()

# Milliseconds an EventSource waits before connecting again.
RETRY_MS = 3000


def visible(user: User, found: FeedEvent) -> bool:
    if user.is_admin:
        return True
    kind = found.event.target_type
    if kind == "machine":
        return True
    if kind in ("image", "setup"):
        return user.is_staff or found.owner_id == user.id
    if kind == "user":
        return found.event.target == user.username
    return False


class EventStream:
    """One client's stream: a streaming producer of its request, so that a
    full socket buffer is noticed."""

    def __init__(
        self,
        request: IRequest,
        user: User,
        machine_id: int | None,
        build_after: dict[int, int],
        authenticator: Authenticator,
        backlog: int,
    ) -> None:
        self._request = request
        self._backlog = backlog
        self._user = user
        self._machine = machine_id
        self._build_after = dict(build_after)
        self.builds = frozenset(build_after)
        self._authenticator = authenticator
        self._paused = False
        self._waiting = 0  # bytes written while the client was not reading
        self.done: Deferred[None] = Deferred()
        request.notifyFinish().addBoth(lambda _: self._end())
        request.registerProducer(self, True)

    # -- IPushProducer: the transport says when the client stops reading --

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._waiting = 0

    def stopProducing(self) -> None:
        self._end()

    # -- from the feed ---------------------------------------------------------

    def deliver(self, batch: Batch, progress: Moved) -> None:
        for found in batch.events:
            e = found.event
            if self._machine is not None and (
                e.target_type != "machine" or e.target != str(self._machine)
            ):
                continue
            if visible(self._user, found):
                self._send("event", {**render.event(e), "MAC": found.mac})
        for line in batch.logs:
            if self._machine is None or line.machine_id == self._machine:
                self._send("log", {**render.log_line(line.line), "MAC": line.mac})
        for machine_id, (mac, current) in progress.items():
            if self._machine is None or machine_id == self._machine:
                self._send(
                    "progress",
                    {
                        "MAC": mac,
                        "Progress": render.progress(current) if current is not None else None,
                    },
                )
        for build_id, lines in batch.build_lines.items():
            after = self._build_after.get(build_id)
            new = [line for seq, line in lines if after is not None and seq > after]
            if new:
                self._build_after[build_id] = lines[-1][0]
                self._send("build-log", {"Build": build_id, "Lines": new})

    def keepalive(self) -> None:
        self._write(b": keepalive\n\n")
        d = Deferred.fromCoroutine(self._authenticator.authenticate(self._request))
        d.addCallbacks(self._still_signed_in, self._signed_out)

    def close(self) -> None:
        self._end()

    # -------------------------------------------------------------------------

    def start(self, build_lines: dict[int, list[str]]) -> None:
        self._request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        self._request.setHeader(b"cache-control", b"no-store")
        # Tells nginx-like proxies not to hold the answer back.
        self._request.setHeader(b"x-accel-buffering", b"no")
        self._write(b"retry: %d\n\n" % RETRY_MS)
        for build_id, lines in build_lines.items():
            if lines:
                self._send("build-log", {"Build": build_id, "Lines": lines})

    def _still_signed_in(self, who: Any) -> None:
        if who.user is None or who.user.id != self._user.id:
            self._end()
        else:
            # A role changed since is what the stream shows from now on.
            self._user = who.user

    def _signed_out(self, failure: Any) -> None:
        if not failure.check(ApiError):
            log.failure("event stream: checking the credential again", failure)
        self._end()

    def _send(self, kind: str, data: dict[str, Any]) -> None:
        self._write(b"event: %s\ndata: %s\n\n" % (kind.encode(), json.dumps(data).encode()))

    def _write(self, data: bytes) -> None:
        if self.done.called:
            return
        if self._paused:
            self._waiting += len(data)
            if self._waiting > self._backlog:
                # Too slow a reader: end it rather than hold its backlog.
                self._request.loseConnection()
                self._end()
                return
        self._request.write(data)

    def _end(self) -> None:
        if not self.done.called:
            # Gone with the connection, when that is why it ends.
            if getattr(self._request, "channel", None) is not None:
                self._request.unregisterProducer()
            self.done.callback(None)


class StreamResource:
    def __init__(
        self,
        db: DBPool,
        feed: EventFeed,
        access: ImageAccess,
        authenticator: Authenticator,
        backlog: int,
    ) -> None:
        self._db = db
        self._backlog = backlog
        self._feed = feed
        self._access = access
        self._authenticator = authenticator

    @route("/events/stream", ["GET"], access="signed-in")
    async def stream(self, request: IRequest) -> bytes:
        """Server-sent events: ``event`` (audit events, with the machine's
        MAC), ``log`` (management OS log lines), ``progress`` (a machine's
        current work moved) and, with ``build=ID``, ``build-log``.
        ``machine=MAC`` keeps only that machine's."""
        args = query_args(request)
        unknown = set(args) - {"machine", "build"}
        if unknown:
            raise BadRequest(f"unknown parameter {sorted(unknown)[0]!r}: machine, build")
        machine_id = None
        if "machine" in args:
            machine_id = (await machine_or_404(self._db, args["machine"])).id
        build_lines: dict[int, list[str]] = {}
        build_after: dict[int, int] = {}
        build_id = int_arg(args, "build", None)
        if build_id is not None:
            build = await self._db.read(builds.thd_get, build_id)
            if build is None:
                raise NotFound(f"no build {build_id}")
            await self._access.readable(request, build.image_uuid)
            so_far = await self._db.read(builds.thd_log, build_id)
            build_lines[build_id] = [line for _, line in so_far]
            build_after[build_id] = so_far[-1][0] if so_far else -1
        who = caller(request)
        stream = EventStream(
            request, who, machine_id, build_after, self._authenticator, self._backlog
        )
        try:
            await self._feed.add(stream, build_after)
        except ApiError:
            stream.close()
            raise
        stream.start(build_lines)
        try:
            await stream.done
        finally:
            self._feed.remove(stream)
        return b""
