"""The private parts of Twisted's HTTP server that pxed relies on, in one
place.

pxed answers some requests earlier than Twisted's HTTP server lets an
application: an upload's credential is checked from its headers with the
body still unread, and what the parser refuses is answered in JSON
(pxed.web.site).  Twisted has no public way to do either, so this module is
the one that touches what Twisted keeps to itself (with sendfile.py, whose
transport internals have a slower fallback instead).  Each name is in
``PRIVATE`` with why pxed needs it.  ``check`` runs at start
(pxed.service.prepare) and refuses a Twisted that lacks one, naming it: a
renamed attribute would otherwise be read as absent, or an override never
called, and uploads would be read before their credential without a word.
tests/web/test_twistedhttp.py drives real requests through each path;
setup.py pins Twisted to the versions it passes on."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import NamedTuple

from twisted.application.internet import StreamServerEndpointService
from twisted.copyright import version as twisted_version
from twisted.internet import tcp
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import http, resource, server

# "Class.name" -> why pxed needs it.  Methods are ones Twisted calls and
# pxed overrides; attributes are read or set.
PRIVATE: dict[str, str] = {
    "Request.gotLength": (
        "called once a request's headers are in, before any byte of its body and "
        "before Twisted's own 100 Continue: where the body's file is chosen and an "
        "upload's credential checked (Twisted: 'not intended for users')"
    ),
    "HTTPChannel._command": "the request's method, read before its body: logs, metrics",
    "HTTPChannel._path": "the request's target, read before its body: logs, metrics",
    "HTTPChannel._version": "the request's HTTP version, read before its body: 100 Continue",
    "HTTPChannel.paused": (
        "LineReceiver's flag: set, the parser leaves what arrived after the headers "
        "unparsed until it is cleared and dataReceived(b'') parses it"
    ),
    "HTTPChannel._respondToBadRequestAndDisconnect": (
        "the parser's one answer to a request it cannot parse (a bare 400), answered in JSON"
    ),
    "HTTPChannel.allHeadersReceived": (
        "called when a request's headers are in: the header deadline ends"
    ),
    "HTTPChannel.requestDone": "called when a response is done: the next header deadline starts",
    "tcp.Connection.bufferSize": "the size of one socket read: 1 MiB for uploads instead of 64 KiB",
    "StreamServerEndpointService._raiseSynchronously": (
        "set, a port that cannot be bound fails the start instead of being only logged"
    ),
}

# Where HTTPChannel keeps the request line until the body is in.
_REQUEST_LINE = ("_command", "_path", "_version")

# The attribute of a StreamServerEndpointService, set True to have a failed
# listen raise from startService (documented as an ivar on the class).
_RAISE_SYNCHRONOUSLY = "_raiseSynchronously"


class TwistedChanged(Exception):
    """This Twisted lacks something pxed relies on; the message is one line."""


class RequestLine(NamedTuple):
    method: bytes
    target: bytes
    version: bytes


def request_line(channel: http.HTTPChannel) -> RequestLine:
    """The request line of the request whose body *channel* is reading (or
    about to): Twisted hands it to the Request only once the body is in.
    Empty parts before the line has arrived and after the body has."""
    return RequestLine(*(getattr(channel, name, b"") for name in _REQUEST_LINE))


def hold_body(channel: http.HTTPChannel) -> None:
    """Read no more from the socket, and leave what the last read brought
    beyond the headers unparsed: the body waits, in the kernel and in the
    parser's buffer, until ``release_body``.  (HTTPChannel.pauseProducing is
    the transport's back-pressure, not the parser's: it would not do.)"""
    channel.transport.pauseProducing()
    channel.paused = True


def release_body(channel: http.HTTPChannel) -> None:
    """Undo ``hold_body``: parse what was held back, then read on."""
    channel.paused = False
    channel.transport.resumeProducing()
    channel.dataReceived(b"")


def take_expect_continue(request: server.Request) -> bool:
    """Whether the client waits for 100 Continue; the header is removed, so
    Twisted, which sends 100 Continue right after ``gotLength`` returns, does
    not: call it from ``headers_received``, and ``send_continue`` once the
    body is wanted."""
    expect = request.requestHeaders.getRawHeaders(b"expect")
    if not expect:
        return False
    request.requestHeaders.removeHeader(b"expect")
    return expect[0].lower() == b"100-continue"


def send_continue(channel: http.HTTPChannel) -> None:
    """100 Continue, to a client that asked in HTTP/1.1 (as Twisted would)."""
    if request_line(channel).version == b"HTTP/1.1":
        channel.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def set_read_size(transport: object, size: int) -> None:
    """Have a TCP connection read up to *size* bytes at a time (Twisted's
    default is 64 KiB).  Others (TLS, UNIX sockets) keep their own."""
    if isinstance(transport, tcp.Connection):
        transport.bufferSize = size


def raise_listen_errors(service: StreamServerEndpointService) -> None:
    """A port that cannot be bound makes *service*'s start raise (twistd
    exits with the error) instead of only logging it."""
    setattr(service, _RAISE_SYNCHRONOUSLY, True)


class Request(server.Request):
    """twisted.web's Request with its headers-are-in hook under pxed's name."""

    def gotLength(self, length: int | None) -> None:
        self.headers_received(length)

    def headers_received(self, length: int | None) -> None:
        """The request's headers are in, nothing of its body (*length*: its
        Content-Length, None if chunked) nor its method or path
        (``request_line`` has them).  Sets ``self.content``, the file the
        body is written to."""
        server.Request.gotLength(self, length)


class Channel(http.HTTPChannel):
    """HTTPChannel with the parser's refusal under pxed's name."""

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.refuse_malformed()

    def refuse_malformed(self) -> None:
        """Answer a request the parser cannot parse and close."""
        http.HTTPChannel._respondToBadRequestAndDisconnect(self)


# -- the check at start -------------------------------------------------------


def _class_names() -> list[str]:
    """The names of PRIVATE that the classes must have (the request line
    is set on instances: the probe below finds those)."""
    owners: dict[str, type] = {
        "Request": http.Request,
        "HTTPChannel": http.HTTPChannel,
        "tcp.Connection": tcp.Connection,
        "StreamServerEndpointService": StreamServerEndpointService,
    }
    kinds: dict[str, type | None] = {
        "HTTPChannel.paused": bool,
        "tcp.Connection.bufferSize": int,
        "StreamServerEndpointService._raiseSynchronously": bool,
    }
    missing = []
    for key in PRIVATE:
        owner, _, name = key.rpartition(".")
        if owner not in owners:
            continue
        if name in _REQUEST_LINE:
            continue
        value = getattr(owners[owner], name, None)
        kind = kinds.get(key)
        if (kind is None and not callable(value)) or (kind is not None and type(value) is not kind):
            missing.append(key)
    return missing


class _Probe(NamedTuple):
    line: RequestLine
    body_held: bytes
    body_released: bytes
    written_while_held: bytes
    refused: bool


def _probe() -> _Probe:
    """Drive one request with a body, and one the parser refuses, through
    an in-memory HTTPChannel the way pxed.web.site does."""
    seen: dict[str, object] = {}

    class ProbeRequest(Request):
        def headers_received(self, length: int | None) -> None:
            seen["line"] = request_line(self.channel)
            self.content = io.BytesIO()
            take_expect_continue(self)
            hold_body(self.channel)

        def process(self) -> None:
            pass

    class ProbeChannel(Channel):
        requestFactory = ProbeRequest

        def refuse_malformed(self) -> None:
            seen["refused"] = True
            super().refuse_malformed()

    # A Site of its own clock: the probe arms no timer on the reactor.
    site = server.Site(resource.Resource(), reactor=Clock())
    transport = StringTransport()
    channel = ProbeChannel()
    channel.site = site
    channel.makeConnection(transport)
    channel.dataReceived(
        b"POST /probe?q HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: 4\r\n\r\nbody"
    )
    content = getattr(channel.requests[-1], "content", None) if channel.requests else None
    if not isinstance(content, io.BytesIO):
        raise TwistedChanged("the request's body file is not the one set in gotLength")
    body_held = content.getvalue()
    written = transport.value()
    release_body(channel)
    body_released = content.getvalue()

    bad = ProbeChannel()
    bad.site = site
    bad.makeConnection(StringTransport())
    bad.dataReceived(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    line = seen.get("line")
    return _Probe(
        line if isinstance(line, RequestLine) else RequestLine(b"", b"", b""),
        body_held,
        body_released,
        written,
        bool(seen.get("refused")),
    )


def changed() -> list[str]:
    """What of PRIVATE this Twisted lacks or does differently, each as
    ``name (why pxed needs it)``; empty when pxed can run on it."""
    problems = [f"{key} ({PRIVATE[key]})" for key in _class_names()]
    try:
        probe = _probe()
    except Exception as e:  # whatever a changed parser does to the probe
        return [*problems, f"an HTTP request could not be parsed the way pxed does ({e})"]
    expected = RequestLine(b"POST", b"/probe?q", b"HTTP/1.1")
    for field, name in zip(RequestLine._fields, ("_command", "_path", "_version"), strict=True):
        if getattr(probe.line, field) != getattr(expected, field):
            key = f"HTTPChannel.{name}"
            problems.append(f"{key} ({PRIVATE[key]})")
    paused = PRIVATE["HTTPChannel.paused"]
    if probe.body_held:
        problems.append(f"HTTPChannel.paused (the body was parsed while held: {paused})")
    elif probe.body_released != b"body":
        problems.append(f"HTTPChannel.paused (the held body was not parsed on release: {paused})")
    if probe.written_while_held:
        problems.append(
            "Request.gotLength (Twisted answered before the credential was checked: "
            f"{PRIVATE['Request.gotLength']})"
        )
    if not probe.refused:
        key = "HTTPChannel._respondToBadRequestAndDisconnect"
        problems.append(f"{key} ({PRIVATE[key]})")
    return list(dict.fromkeys(problems))


def check(what_changed: Callable[[], list[str]] = changed) -> None:
    """Raise TwistedChanged, one line naming each change, if this Twisted
    lacks what pxed relies on."""
    problems = what_changed()
    if problems:
        raise TwistedChanged(
            f"Twisted {twisted_version} changed what pxed relies on "
            f"(pxed/web/twistedhttp.py): {'; '.join(problems)}; "
            "install a Twisted version setup.py allows"
        )
