"""The twisted.web Site: request logging through twisted.logger, no
tracebacks in responses, and the limits that hold before a client is known.

Before authentication a client gets nothing that costs much:

* A request with a body that matters (an upload, or any body larger than
  EARLY_AUTH_BODY) is authenticated from its headers alone: the body is
  held in ``headers_received`` and the credential checked; an absent or
  invalid one gets its 401 and the connection is closed with the body
  unread, unparsed and unstaged (how the body is held, and every other
  private part of Twisted's HTTP server pxed uses: pxed.web.twistedhttp).
  The identity found is kept on the request, so the route's own check does
  not look it up again.
* The request line and headers must arrive within ``header_timeout``
  seconds of the connection (or of the previous response): Twisted's idle
  timeout restarts with every byte, so a client sending one byte now and
  then would otherwise hold its connection for ever.
* At most ``max_connections_per_client`` connections from one address are
  open at once; more are closed as soon as they are accepted.

Every answer is counted in pxed.metrics here, where errors, answers given
before the body and the HTTP parser's refusals are seen too (a download
cut off midway as well), labelled by the route template the router put on
the request."""

from __future__ import annotations

import time
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES
from twisted.web.resource import IResource
from twisted.web.server import Site

from pxed.db.errors import DomainError
from pxed.errors import ApiError, error_json
from pxed.metrics import Metrics
from pxed.storage import READ_SIZE, Storage
from pxed.web.auth import ANONYMOUS, SESSION_COOKIE, Authenticator, Identity, check_csrf
from pxed.web.body import MAX_JSON_BODY, BoundedBody
from pxed.web.cors import CORS
from pxed.web.router import as_api_error
from pxed.web.twistedhttp import (
    Channel,
    Request,
    hold_body,
    release_body,
    request_line,
    send_continue,
    set_read_size,
    take_expect_continue,
)
from pxed.web.upload import UploadBody, is_upload
from pxed.workers import ThreadPoolService

access_log = Logger(namespace="pxed.access")
log = Logger()

# Bodies up to this size (not uploads) are read before the route checks the
# credential; larger ones, and chunked ones, are authenticated first.
EARLY_AUTH_BODY = 64 * 1024

DEFAULT_HEADER_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 64


def _raw_response(status: int, message: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 response (JSON error body, connection closing),
    for answers given outside Twisted's Request."""
    body = error_json(message)
    lines = [b"HTTP/1.1 %d %s" % (status, RESPONSES.get(status, b"Error"))]
    lines += [name + b": " + value for name, value in headers]
    lines += [
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        b"Connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class PxedRequest(Request):
    started: float
    # When the headers were complete (the body, if any, follows).
    headers_at: float
    # The identity found from the headers before the body was read (see
    # Authenticator.authorise), if it was looked up then.
    preauthenticated: Identity | None = None
    # The template of the route serving the request (set by pxed.web.router),
    # and whether the answer is a file (StaticFiles): labels for pxed.metrics.
    route: str | None = None
    # False: left out of the access log (boot answers given from memory,
    # unless log_boot_answers is set: a rack booting would flood it).
    logged: bool = True
    download = False
    _metrics: Metrics | None = None
    _counted = False

    def headers_received(self, length: int | None) -> None:
        self.headers_at = time.monotonic()
        site = self.channel.site
        ctype = self.requestHeaders.getRawHeaders(b"content-type", [b""])[0]
        upload = is_upload(ctype) and site.storage is not None
        # length: None is chunked; 0 means the request is complete now
        # (Twisted processes it right after this call: nothing to hold).
        if (
            site.authenticator is not None
            and length != 0
            and (upload or length is None or length > EARLY_AUTH_BODY)
        ):
            self._authenticate_first(upload, ctype)
            return
        # Nobody uploads without a credential; such a body is not written to
        # disk at all (the request gets its 401 once it has arrived).
        has_credential = self.requestHeaders.hasHeader(b"authorization") or (
            SESSION_COOKIE + b"=" in b";".join(self.requestHeaders.getRawHeaders(b"cookie", []))
        )
        self._install_body(upload and has_credential, ctype)

    def _install_body(self, upload: bool, ctype: bytes) -> None:
        site = self.channel.site
        if upload:
            # 1 MiB socket reads: 0.40-0.45 GB/s instead of 0.27-0.37 with
            # Twisted's 64 KiB (2 GiB uploads over loopback, sha256 and fsync
            # included, on this 2-core machine kind, before the writer left
            # the reactor thread); bench/results/latest.md has today's.
            set_read_size(self.channel.transport, READ_SIZE)
            self.content = UploadBody(
                site.storage, site.io, ctype, self.channel.transport, site.metrics
            )
        else:
            self.content = BoundedBody(MAX_JSON_BODY)

    # -- authentication before the body ---------------------------------------

    def _authenticate_first(self, upload: bool, ctype: bytes) -> None:
        channel = self.channel
        hold_body(channel)
        self.content = BoundedBody(0)
        # "100 Continue" only once the credential is good: a client that
        # waits for it then sends no body at all before its 401.
        continue_ = take_expect_continue(self)
        d = Deferred.fromCoroutine(channel.site.authenticator.authenticate(self))
        d.addCallbacks(self._admitted, self._refused, callbackArgs=(upload, ctype, continue_))
        d.addErrback(lambda f: log.failure("authenticating before the body", f))

    def _admitted(self, who: Identity, upload: bool, ctype: bytes, continue_: bool) -> None:
        channel = self.channel
        if channel is None:  # the client went away meanwhile
            return
        if who is ANONYMOUS:
            self._refuse(401, "sign in, or send 'Authorization: Bearer <token>'")
            return
        try:
            # Only requests that change something send a body this large.
            check_csrf(self, who, safe=False)
        except ApiError as e:
            self._refuse(e.status, e.message)
            return
        self.preauthenticated = who
        self._install_body(upload, ctype)
        if continue_:
            send_continue(channel)
        # What arrived with the headers, held back until now, then the rest.
        release_body(channel)

    def _refused(self, failure: Failure) -> None:
        if self.channel is None:
            return
        err = failure.value
        if isinstance(err, DomainError):
            err = as_api_error(err)
        if isinstance(err, ApiError):
            self._refuse(err.status, err.message)
        else:
            log.failure("authenticating before the body", failure)
            self._refuse(500, "internal error")

    def _refuse(self, status: int, message: str) -> None:
        """Answer *status* and close, the body left unread."""
        channel = self.channel
        site = channel.site
        site.cors.apply(self)  # not a preflight: the method is not known here
        headers = [
            (name, value)
            for name, values in self.responseHeaders.getAllRawHeaders()
            for value in values
        ]
        response = _raw_response(status, message, headers)
        channel.transport.write(response)
        # Whatever the client still sends is not read: the socket stays
        # paused until it closes (once the answer is written).
        channel.transport.loseConnection()
        method, target, _ = request_line(channel)
        path = target.split(b"?")[0]
        access_log.info(
            '{client} "{method} {path}" {status} {size} before the body',
            client=getattr(channel.transport.getPeer(), "host", "-"),
            method=method.decode("ascii", "replace"),
            path=path.decode("utf-8", "replace"),
            status=status,
            size=len(response),
        )
        self._counted = True
        site.metrics.request_done(
            method.decode("ascii", "replace"),
            site.route_of(method, path),
            status,
            time.monotonic() - self.headers_at,
        )

    def process(self) -> None:
        self.started = time.monotonic()
        site = self.channel.site
        self._metrics = site.metrics
        if isinstance(self.content, UploadBody):  # the whole body is in
            site.metrics.upload_done(self.content.received, self.started - self.headers_at)
        # self.site is only set inside Request.process.
        if site.cors.apply(self):
            return
        super().process()

    def finish(self) -> None:
        super().finish()
        self._count()

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        # Cut off while its answer was being sent (a download the client
        # left); one cut off before any answer was given is not counted.
        if self.startedWriting:
            self._count()

    def _count(self) -> None:
        """Once per request that reached ``process``: answered, or cut off."""
        metrics = self._metrics
        if metrics is None or self._counted:
            return
        self._counted = True
        now = time.monotonic()
        method = self.method.decode("ascii", "replace")
        metrics.request_done(method, self.route, self.code, now - self.headers_at)
        if self.download:
            metrics.download_done(self.sentLength, now - self.started)


class PxedChannel(Channel):
    """HTTPChannel with a deadline for each request's line and headers, and
    a cap on the connections one client address holds."""

    site: PxedSite
    # One DelayedCall per connection, armed while a request's line and
    # headers are awaited.
    _header_deadline = None
    _deadline_armed = False
    # Bytes of the next request have arrived (its deadline gets a 408).
    _request_begun = False
    _client: str | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        if not self.site.connection_opened(self):
            self.transport.abortConnection()
            return
        self._start_header_deadline()

    def dataReceived(self, data: bytes) -> None:
        if self._deadline_armed:
            self._request_begun = True
        super().dataReceived(data)

    # -- requests the parser refuses: answered in JSON, never just closed --

    # Lines of the current request's head so far, and their bytes.
    _head_lines = 0
    _head_bytes = 0

    def lineReceived(self, line: bytes) -> None:
        self._head_lines += 1
        self._head_bytes += len(line)
        # Checked here, as HTTPChannel would (its answer is a bare 400).
        if self._head_bytes > self.totalHeadersSize:
            self._refuse(
                431, f"request line and headers are limited to {self.totalHeadersSize} bytes"
            )
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        # LineReceiver closes the connection without a word.
        if self._head_lines == 0:
            self._refuse(414, f"the request line is limited to {self.MAX_LENGTH} bytes")
        else:
            self._refuse(431, f"a header line is limited to {self.MAX_LENGTH} bytes")

    def refuse_malformed(self) -> None:
        # A NUL in the request line, a malformed header: Twisted's answer
        # is a bare 400.
        self._refuse(400, "malformed request")

    def _refuse(self, status: int, message: str) -> None:
        self.transport.write(_raw_response(status, message, []))
        self._count(status)
        # Nothing more from this connection is parsed.
        self.dataReceived = self.lineReceived = lambda *args: None  # type: ignore[method-assign]
        self.loseConnection()

    def _count(self, status: int) -> None:
        """An answer given before there was a request (no route, no time)."""
        method = request_line(self).method
        self.site.metrics.request_done(method.decode("ascii", "replace"), None, status)

    def allHeadersReceived(self) -> None:
        self._cancel_header_deadline()
        self._head_lines = self._head_bytes = 0
        super().allHeadersReceived()

    def requestDone(self, request: Request) -> None:
        # Started before the pipelined data (if any) is parsed, which may
        # complete the next request's headers at once.
        if self.persistent:
            self._start_header_deadline()
        super().requestDone(request)

    def connectionLost(self, reason: Failure) -> None:
        self._drop_header_deadline()
        self.site.connection_closed(self)
        super().connectionLost(reason)

    def _start_header_deadline(self) -> None:
        timeout = self.site.header_timeout
        if not timeout or self._deadline_armed:
            return
        self._request_begun = False
        self._deadline_armed = True
        call = self._header_deadline
        if call is not None and call.active():
            # Moved later, not cancelled and made anew for each request:
            # the reactor re-sorts a call moved later only when it is due.
            call.reset(timeout)
        else:
            self._header_deadline = self.site.reactor.callLater(timeout, self._headers_late)

    def _cancel_header_deadline(self) -> None:
        # Disarmed only; the next request's start moves it (above).
        self._deadline_armed = False

    def _drop_header_deadline(self) -> None:
        self._deadline_armed = False
        if self._header_deadline is not None and self._header_deadline.active():
            self._header_deadline.cancel()
        self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if not self._deadline_armed:
            return  # a request came in time (and is still being answered)
        self._deadline_armed = False
        log.info(
            "closing {client}: no complete request headers within {timeout} s",
            client=self._client or "-",
            timeout=self.site.header_timeout,
        )
        if self._request_begun:
            message = f"request line and headers not received within {self.site.header_timeout} s"
            self.transport.write(_raw_response(408, message, []))
            self._count(408)
        # An idle keep-alive connection is closed without a word (a 408
        # there could be taken as the answer to the client's next request).
        self.transport.loseConnection()


class PxedSite(Site):
    displayTracebacks = False
    requestFactory = PxedRequest
    protocol = PxedChannel

    def __init__(
        self,
        root: IResource,
        cors_origins: tuple[str, ...] = (),
        storage: Storage | None = None,
        reactor=None,
        io: ThreadPoolService | None = None,
        authenticator: Authenticator | None = None,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
        metrics: Metrics | None = None,
        route_of: Callable[[bytes, bytes], str | None] = lambda method, path: None,
    ) -> None:
        # parsePOSTFormSubmission=False: Twisted would otherwise parse whole
        # multipart bodies into memory.
        super().__init__(
            root, requestFactory=PxedRequest, parsePOSTFormSubmission=False, reactor=reactor
        )
        self.cors = CORS(cors_origins)
        self.storage = storage
        self.io = io  # writes and hashes uploads
        self.authenticator = authenticator
        self.header_timeout = header_timeout
        self.max_connections_per_client = max_connections_per_client
        self.metrics = metrics if metrics is not None else Metrics()
        # (method, path) -> route template, for requests refused before
        # they reach the app (PxedApp.route_of).
        self.route_of = route_of
        # client address -> connections open
        self._connections: dict[str, int] = {}
        self._warned: set[str] = set()

    def connection_opened(self, channel: PxedChannel) -> bool:
        """Count *channel*'s connection; False if its client has too many."""
        host = getattr(channel.transport.getPeer(), "host", None)
        if host is None:  # a UNIX socket: no address to count by
            return True
        open_now = self._connections.get(host, 0)
        if open_now >= self.max_connections_per_client:
            if host not in self._warned:  # once, until it drops below again
                self._warned.add(host)
                log.warn(
                    "{client} has {n} connections open: closing further ones",
                    client=host,
                    n=open_now,
                )
            return False
        self._connections[host] = open_now + 1
        channel._client = host
        return True

    def connection_closed(self, channel: PxedChannel) -> None:
        host = channel._client
        if host is None:
            return
        channel._client = None
        left = self._connections[host] - 1
        self._warned.discard(host)
        if left:
            self._connections[host] = left
        else:
            del self._connections[host]

    def log(self, request: Request) -> None:
        if not getattr(request, "logged", True):
            return
        # The path only: query strings may carry secrets (OAuth codes).
        duration = time.monotonic() - getattr(request, "started", time.monotonic())
        access_log.info(
            '{client} "{method} {path}" {status} {size} {ms:.1f}ms',
            client=request.getClientAddress().host
            if hasattr(request.getClientAddress(), "host")
            else "-",
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("utf-8", "replace"),
            status=request.code,
            size=request.sentLength,
            ms=duration * 1000,
        )
