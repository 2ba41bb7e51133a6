"""Fetching a URL into a staging file: over HTTP(S) with treq, redirects
followed by hand (each hop's scheme checked and counted, each connection's
address checked by pxed.imports.addresses), the body written and hashed on
a worker thread as it arrives with the socket paused while the writer is
behind, so memory stays flat whatever the size, and cut off at the size
limit."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import error as neterror
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss

from pxed.imports.addresses import AddressPolicy, CheckedEndpoints
from pxed.workers import ThreadPoolService

PIECE = 1024 * 1024
# Pieces handed to the writer and not yet written before the socket pauses.
HIGH_WATER = 4
SCHEMES = ("http", "https")
REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(Exception):
    """The URL could not be fetched; the message says why, in one line."""


class BodyTooLarge(FetchError):
    pass


def check_url(url: str) -> str:
    """*url* if it is one imports fetch; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username is not None or parts.password is not None:
        # They would end up in events and logs, and Twisted's client does
        # not send them anyway.
        raise ValueError("carries credentials (user:password@); pxed does not send them")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("has a malformed port") from None
    return url


def shown(url: str) -> str:
    """*url* as it may appear in events and logs: without credentials, query
    or fragment (presigned URLs carry their tokens there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class _Sink(Protocol):
    """The response body, into *fd*: written and hashed in order on the
    pool, one piece after another."""

    def __init__(
        self, fd: int, pool: ThreadPoolService, limit: int, progress: Callable[[int], None]
    ) -> None:
        self._fd = fd
        self._pool = pool
        self._limit = limit
        self._progress = progress
        self._hash = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._chain: Deferred[None] = Deferred()
        self._chain.callback(None)
        self._pending = 0
        self._paused = False
        self.received = 0
        self.error: Exception | None = None
        self.done: Deferred[tuple[int, str]] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self.error is not None:
            return
        self.received += len(data)
        if self.received > self._limit:
            self._fail(
                BodyTooLarge(f"the body is larger than {self._limit} bytes (import_max_bytes)")
            )
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= PIECE:
            self._submit()

    def _submit(self) -> None:
        pieces, self._buffer, self._buffered = self._buffer, [], 0
        if not pieces:
            return
        self._pending += 1
        if self._pending >= HIGH_WATER and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        self._chain.addCallback(lambda _: self._pool.run(self._write, pieces))
        self._chain.addCallbacks(self._wrote, self._write_failed)

    def _write(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self._hash.update(piece)
            view = memoryview(piece)
            while view:
                view = view[os.write(self._fd, view) :]

    def _wrote(self, _: None) -> None:
        self._pending -= 1
        self._progress(self.received)
        if self._paused and self._pending <= 1 and self.error is None:
            self._paused = False
            self.transport.resumeProducing()

    def _write_failed(self, failure: Failure) -> None:
        self._pending -= 1
        self._fail(failure.value if isinstance(failure.value, Exception) else FetchError("write"))

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
            self._buffer = []
            # Drops the connection: the rest of the body is never read.
            self.transport.stopProducing()

    def abort(self, error: Exception) -> None:
        self._fail(error)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.error is None and not reason.check(ResponseDone, PotentialDataLoss):
            self.error = FetchError(f"the connection broke: {reason.getErrorMessage()}")
        if self.error is None:
            self._submit()
        self._chain.addCallback(lambda _: self._finish())

    def _finish(self) -> None:
        if self.error is not None:
            self.done.errback(self.error)
        else:
            self.done.callback((self.received, self._hash.hexdigest()))


class Fetcher:
    def __init__(
        self,
        reactor,
        pool: ThreadPoolService,
        policy: AddressPolicy,
        max_redirects: int,
    ) -> None:
        self._client = HTTPClient(
            Agent.usingEndpointFactory(reactor, CheckedEndpoints(reactor, pool, policy))
        )
        self._pool = pool
        self._max_redirects = max_redirects

    async def fetch(
        self,
        url: str,
        fd: int,
        limit: int,
        progress: Callable[[int, int | None], None],
        sink_ready: Callable[[_Sink | _Pending | None], None],
    ) -> tuple[int, str]:
        """GET *url* (following redirects) into *fd*; (bytes, sha256) of the
        body.  *progress* gets (received, Content-Length or None); *sink_ready*
        what to abort while a request waits or a body is read."""
        for _ in range(self._max_redirects + 1):
            request = self._client.get(url, allow_redirects=False, unbuffered=True)
            sink_ready(_Pending(request))
            try:
                response = await request
            except (neterror.ConnectError, ResponseNeverReceived, ResponseFailed) as e:
                raise FetchError(f"{shown(url)}: {_why(e)}") from None
            finally:
                sink_ready(None)
            if response.code in REDIRECTS:
                location = response.headers.getRawHeaders(b"location")
                response.deliverBody(_Discard())
                if not location:
                    raise FetchError(f"{shown(url)} redirected without a Location")
                target = urljoin(url, location[0].decode("latin-1"))
                try:
                    check_url(target)
                except ValueError as e:
                    raise FetchError(f"{shown(url)} redirected to a URL that {e}") from None
                url = target
                continue
            if response.code != 200:
                response.deliverBody(_Discard())
                phrase = response.phrase.decode("latin-1", "replace")
                raise FetchError(f"{shown(url)} answered {response.code} {phrase}")
            total = response.length if isinstance(response.length, int) else None
            if total is not None and total > limit:
                response.deliverBody(_Discard())
                raise BodyTooLarge(
                    f"{shown(url)} is {total} bytes, more than {limit} (import_max_bytes)"
                )
            sink = _Sink(fd, self._pool, limit, lambda n, total=total: progress(n, total))
            sink_ready(sink)
            try:
                response.deliverBody(sink)
                return await sink.done
            finally:
                sink_ready(None)
        raise FetchError(f"more than {self._max_redirects} redirects (import_max_redirects)")


def _why(error: Exception) -> str:
    """A connection's failure in a few words (a TLS certificate that does
    not verify, a refused port), not the class and repr Twisted gives."""
    if isinstance(error, neterror.ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(error, neterror.TCPTimedOutError | neterror.TimeoutError):
        return "connecting timed out"
    if isinstance(error, ResponseNeverReceived | ResponseFailed) and error.reasons:
        reason = error.reasons[0]
        if reason.check(SSL.Error):
            return f"TLS failed: {_ssl_message(reason.value)}"
        return reason.getErrorMessage() or reason.type.__name__
    return str(error) or type(error).__name__


def _ssl_message(error: Exception) -> str:
    # pyOpenSSL's errors are lists of (library, function, reason) tuples.
    try:
        return "; ".join(str(item[-1]) for item in error.args[0]) or "handshake error"
    except (IndexError, TypeError):
        return str(error)


class _Pending:
    """A request whose answer has not come: aborting it cancels it."""

    def __init__(self, request: Deferred) -> None:
        self._request = request

    def abort(self, error: Exception) -> None:
        self._request.cancel()


class _Discard(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.stopProducing()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        pass
