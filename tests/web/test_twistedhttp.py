"""pxed/web/twistedhttp.py: the private parts of Twisted's HTTP server pxed
relies on, on the real classes and through real requests.

If a test here fails after a Twisted upgrade, Twisted changed what
twistedhttp.py's PRIVATE lists: adapt twistedhttp.py and move the Twisted
pin in setup.py.  Each real request goes through one path that uses them:
the body held back while the credential is checked, 100 Continue, the
parser's refusal, the request line of a request refused before its body."""

from __future__ import annotations

import hashlib
import json
import socket

import pytest
import pytest_twisted
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import reactor, task, threads
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.web import http, resource

from pxed import config as pxed_config
from pxed import service
from pxed.web import twistedhttp
from pxed.web.site import PxedSite
from tests.helpers import MIB, eventually, new_image, only_on
from tests.web.test_metrics import scrape, value

sqlite_only = only_on("sqlite", "the HTTP parser's internals do not touch the database")

FAKE = "Bearer pxu_not-a-real-token"


# -- the classes ------------------------------------------------------------------


def test_this_twisted_has_what_pxed_relies_on():
    assert twistedhttp.changed() == []
    twistedhttp.check()
    # What the classes must have, by name (the request line is set on each
    # channel: the probe in changed() finds it).
    for name in (
        "_respondToBadRequestAndDisconnect",
        "allHeadersReceived",
        "requestDone",
    ):
        assert callable(getattr(http.HTTPChannel, name, None)), name
    assert callable(getattr(http.Request, "gotLength", None))
    assert http.HTTPChannel.paused is False
    assert isinstance(StreamServerEndpointService._raiseSynchronously, bool)


def test_a_renamed_request_line_is_named(monkeypatch):
    # As if Twisted kept the version under another name: pxed reads one
    # that Twisted no longer sets.
    monkeypatch.setattr(twistedhttp, "_REQUEST_LINE", ("_command", "_path", "_httpVersion"))
    problems = twistedhttp.changed()
    assert len(problems) == 1 and problems[0].startswith("HTTPChannel._version ("), problems


def test_a_renamed_refusal_is_named(monkeypatch):
    monkeypatch.delattr(http.HTTPChannel, "_respondToBadRequestAndDisconnect")
    problems = twistedhttp.changed()
    assert any(p.startswith("HTTPChannel._respondToBadRequestAndDisconnect (") for p in problems)


def test_a_changed_twisted_stops_the_start_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(twistedhttp.PRIVATE, "HTTPChannel._renamedInAFutureTwisted", "a reason")
    cfg = pxed_config.load(None, {"data_dir": str(tmp_path / "data")})
    with pytest.raises(service.StartupError) as e:
        service.prepare(cfg)
    message = str(e.value)
    assert "\n" not in message
    assert "HTTPChannel._renamedInAFutureTwisted (a reason)" in message
    assert "pxed/web/twistedhttp.py" in message
    # Refused before anything was made.
    assert not (tmp_path / "data").exists()


# -- real requests through a real pxed ----------------------------------------------


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def exchange(port: int, first: bytes, then: bytes = b"", wait_for_continue: bool = False) -> bytes:
    """Send *first*; if *wait_for_continue*, read the interim answer before
    sending *then*; everything the server answers until it closes or has
    sent one whole final answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(first)
        answer = b""
        if wait_for_continue:
            answer = s.recv(65536)
        if then and (not wait_for_continue or answer.startswith(b"HTTP/1.1 100 ")):
            s.sendall(then)
        while True:
            head, sep, body = answer.rpartition(b"\r\n\r\n")
            final = head.rsplit(b"HTTP/1.", 1)[-1]
            length = [
                int(line.split(b":", 1)[1])
                for line in final.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if sep and length and not final.startswith((b"1 100", b"0 100")):
                if len(body) >= length[0]:
                    return answer
            got = s.recv(65536)
            if not got:
                return answer
            answer += got


def upload_head(
    path: str, length: int, auth: str, version: str = "HTTP/1.1", extra: str = ""
) -> bytes:
    return (
        f"POST {path} {version}\r\nHost: x\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/octet-stream\r\nAccept: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


async def latest_sha256(server, image: str) -> str:
    r = await server.admin.get(f"/image/{image}")
    return r.json()["Versions"][-1]["Sha256"]


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_a_body_sent_with_its_headers_waits_for_the_credential(server):
    # Headers and body in one write: the body arrives in the read that
    # completes the headers, is held unparsed while the token is looked up,
    # then parsed into the upload (HTTPChannel.paused, gotLength).
    image = await new_image(server.admin)
    data = hashlib.shake_256(b"held").digest(MIB // 2)
    auth = server.admin.headers["Authorization"]
    answer = await threads.deferToThread(
        exchange, port_of(server), upload_head(f"/image/{image}", len(data), auth) + data
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert await latest_sha256(server, image) == hashlib.sha256(data).hexdigest()


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_100_continue_comes_once_and_only_after_the_credential(server):
    image = await new_image(server.admin)
    data = hashlib.shake_256(b"continue").digest(MIB)
    auth = server.admin.headers["Authorization"]
    head = upload_head(f"/image/{image}", len(data), auth, extra="Expect: 100-continue\r\n")
    answer = await threads.deferToThread(exchange, port_of(server), head, data, True)
    # pxed's 100 Continue, not Twisted's as well (HTTPChannel._version).
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 "), answer[:300]
    assert answer.count(b"100 Continue") == 1
    assert await latest_sha256(server, image) == hashlib.sha256(data).hexdigest()
    # A bad token: its 401 instead, and no body asked for.
    head = upload_head(f"/image/{image}", len(data), FAKE, extra="Expect: 100-continue\r\n")
    answer = await threads.deferToThread(exchange, port_of(server), head, data, True)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
    # HTTP/1.0 has no 100 Continue: the client sends its body at once.
    data = b"ten" * 1000
    head = upload_head(
        f"/image/{image}", len(data), auth, "HTTP/1.0", extra="Expect: 100-continue\r\n"
    )
    answer = await threads.deferToThread(exchange, port_of(server), head + data)
    assert answer.startswith(b"HTTP/1.0 200 "), answer[:300]
    assert await latest_sha256(server, image) == hashlib.sha256(data).hexdigest()


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_a_request_refused_before_its_body_is_logged_and_counted_by_its_line(server, logged):
    # HTTPChannel._command and _path: the Request has neither yet.
    image = await new_image(server.admin)
    head = upload_head(f"/image/{image}?x=1", 64 * MIB, FAKE)
    answer = await threads.deferToThread(exchange, port_of(server), head, b"\0" * MIB)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
    assert any(f'"POST /image/{image}" 401' in line for line in logged), logged[-20:]
    samples = await scrape(server.admin)
    assert value(
        samples, "pxed_http_requests_total", method="POST", route="/image/<uuid>", status="401"
    )


@sqlite_only
@pytest_twisted.ensureDeferred
async def test_a_request_the_parser_refuses_is_answered_in_json(server):
    # HTTPChannel._respondToBadRequestAndDisconnect: a header line without
    # a colon, which Twisted answers with a bare 400.
    answer = await threads.deferToThread(
        exchange, port_of(server), b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n"
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"Content-Type: application/json" in head
    assert json.loads(body) == {"error": "malformed request"}


# -- the transport and the port ------------------------------------------------------


class _Reads(Protocol):
    def __init__(self, made: Deferred) -> None:
        self.made = made
        self.sizes: list[int] = []

    def connectionMade(self) -> None:
        self.made.callback(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.sizes.append(len(data))


@pytest_twisted.ensureDeferred
async def test_the_read_size_is_what_a_connection_reads_at_once():
    # tcp.Connection.bufferSize: Twisted reads 64 KiB a time unless told.
    made: Deferred = Deferred()
    reads = _Reads(made)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(lambda: reads)
    )
    sender = Protocol()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), sender)
    try:
        transport = await made
        twistedhttp.set_read_size(transport, 4 * MIB)
        # Not read until the kernel's buffers hold more than one read.
        transport.pauseProducing()
        sender.transport.write(b"r" * (8 * MIB))
        await task.deferLater(reactor, 0.3, lambda: None)
        transport.resumeProducing()
        await eventually(lambda: sum(reads.sizes) == 8 * MIB, timeout=10)
        assert 64 * 1024 < max(reads.sizes) <= 4 * MIB, reads.sizes[:20]
    finally:
        sender.transport.abortConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_fails_the_start():
    # StreamServerEndpointService._raiseSynchronously.
    taken = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
    try:
        site = PxedSite(resource.Resource(), reactor=reactor)
        web = service.web_service(f"tcp:{taken.getHost().port}:interface=127.0.0.1", site, reactor)
        with pytest.raises(CannotListenError):
            web.startService()
    finally:
        await taken.stopListening()
