"""What a client gets before it is authenticated: uploads refused from their
headers (nothing read, parsed or staged), a deadline for request headers,
and a cap on connections per client address.  Real servers on loopback,
small timeouts."""

from __future__ import annotations

import os
import select
import socket
import time

import pytest_twisted
from twisted.internet import reactor, task, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from pxed.web.upload import MAX_FIELDS, MAX_FIELDS_SIZE
from tests.helpers import MIB, eventually, new_image

FAKE = "Bearer pxu_not-a-real-token"


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def staging(server) -> list[str]:
    return os.listdir(server.config.data_dir / "images" / ".staging")


class StagingWatch:
    """Looks at the staging dir every few milliseconds while a test runs."""

    def __init__(self, server) -> None:
        self.server = server
        self.seen: set[str] = set()
        self.loop = task.LoopingCall(self._look)
        self.loop.clock = reactor
        self.loop.start(0.005)

    def _look(self) -> None:
        self.seen.update(staging(self.server))

    def stop(self) -> set[str]:
        self.loop.stop()
        self._look()
        return self.seen


def head(path: str, length: int | None, ctype: str, auth: str | None, extra: str = "") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Type: {ctype}"]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def send_body(port: int, request_head: bytes, body: bytes, total: int) -> tuple[int, bytes]:
    """Send *request_head*, then *body* repeated until *total* bytes, while
    reading whatever the server answers; stop when the server closes.
    Blocking (run it in a thread).  Returns (body bytes sent, answer)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
    sent = 0
    answer = b""
    view = memoryview(body)
    try:
        s.sendall(request_head)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            want_write = [s] if sent < total else []
            readable, writable, _ = select.select([s], want_write, [], 1)
            if readable:
                got = s.recv(65536)
                if not got:
                    break
                answer += got
            elif writable:
                at = sent % len(body)
                sent += s.send(view[at : at + min(len(body) - at, total - sent)])
    except OSError:  # reset once the server closed with the body unread
        pass
    finally:
        s.close()
    return sent, answer


def multipart_fields(boundary: str, count: int, value: bytes = b"v") -> bytes:
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\n'.encode()
        + value
        + b"\r\n"
    )
    return part * count


async def refused_before_the_body(
    server, ctype: str, auth: str | None, body: bytes, extra: str = "", status: int = 401
) -> None:
    image = await new_image(server.admin)
    total = 128 * MIB
    watch = StagingWatch(server)
    sent, answer = await threads.deferToThread(
        send_body, port_of(server), head(f"/image/{image}", total, ctype, auth, extra), body, total
    )
    assert watch.stop() == set()
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert b'"error"' in answer
    # Answered and closed while the client was still sending: the server
    # did not read the body (what was sent sits in socket buffers).
    assert sent < total // 4, sent
    versions = (await server.admin.get(f"/image/{image}")).json()["Versions"]
    assert len(versions) == 1


@pytest_twisted.ensureDeferred
async def test_upload_with_an_invalid_token_is_refused_before_its_body(server):
    await refused_before_the_body(server, "application/octet-stream", FAKE, b"\0" * MIB)


@pytest_twisted.ensureDeferred
async def test_upload_from_a_session_without_its_csrf_token_is_refused_before_its_body(server):
    r = await server.admin.post("/user/session")
    session = r.headers.getRawHeaders("set-cookie")[0].split(";")[0]
    assert session.startswith("session-name=")
    cookie = f"Cookie: {session}\r\n"
    await refused_before_the_body(
        server, "application/octet-stream", None, b"\0" * MIB, cookie, 403
    )


@pytest_twisted.ensureDeferred
async def test_upload_without_a_credential_is_refused_before_its_body(server):
    await refused_before_the_body(server, "application/octet-stream", None, b"\0" * MIB)


@pytest_twisted.ensureDeferred
async def test_multipart_fields_with_an_invalid_token_are_never_parsed(server):
    boundary = "b0undary"
    fields = multipart_fields(boundary, 10_000)
    await refused_before_the_body(server, f"multipart/form-data; boundary={boundary}", FAKE, fields)


@pytest_twisted.ensureDeferred
async def test_large_json_body_without_a_credential_is_refused_before_it(server):
    total = 128 * MIB
    sent, answer = await threads.deferToThread(
        send_body,
        port_of(server),
        head("/image", total, "application/json", None),
        b" " * MIB,
        total,
    )
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert sent < total // 4


@pytest_twisted.ensureDeferred
async def test_upload_with_a_good_token_waits_for_100_continue(server):
    # The client asks before sending; it gets 100 Continue only once the
    # credential is known to be good, and a bad one gets its 401 instead.
    image = await new_image(server.admin)
    data = b"x" * (3 * MIB)

    def ask(auth: str) -> tuple[bytes, bytes]:
        s = socket.create_connection(("127.0.0.1", port_of(server)), timeout=10)
        try:
            s.sendall(
                head(
                    f"/image/{image}",
                    len(data),
                    "application/octet-stream",
                    auth,
                    "Expect: 100-continue\r\n",
                )
            )
            first = s.recv(65536)
            rest = b""
            if first.startswith(b"HTTP/1.1 100 "):
                s.sendall(data)
                while b"\r\n\r\n" not in rest or not rest.endswith(b"\n"):
                    got = s.recv(65536)
                    if not got:
                        break
                    rest += got
            return first, rest
        finally:
            s.close()

    first, rest = await threads.deferToThread(ask, server.admin.headers["Authorization"])
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert rest.startswith(b"HTTP/1.1 200 "), rest[:200]
    first, rest = await threads.deferToThread(ask, FAKE)
    assert first.startswith(b"HTTP/1.1 401 "), first[:200]


class Stalled(Protocol):
    """Sends the headers and a little of the body, then nothing more."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""
        self.closed = False

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.closed = True


@pytest_twisted.ensureDeferred
async def test_stalled_uploads_with_a_fake_token_hold_no_file_and_no_thread(server):
    image = await new_image(server.admin)
    site = server.pxed.web.factory
    watch = StagingWatch(server)
    request = head(f"/image/{image}", 4096 * MIB, "application/octet-stream", FAKE)
    clients = [
        await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port_of(server)),
            Stalled(request + b"\0" * 100_000),
        )
        for _ in range(20)
    ]
    await eventually(lambda: all(c.closed for c in clients), timeout=10)
    assert watch.stop() == set()
    assert all(c.received.startswith(b"HTTP/1.1 401 ") for c in clients)
    assert site.io._in_flight == 0


# -- multipart form fields (authenticated) -------------------------------------


async def post_multipart(server, image: str, body: bytes, boundary: str):
    return await server.admin.request(
        "POST",
        f"/image/{image}",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )


@pytest_twisted.ensureDeferred
async def test_multipart_field_count_is_capped(server):
    image = await new_image(server.admin)
    boundary = "b0undary"
    r = await post_multipart(server, image, multipart_fields(boundary, MAX_FIELDS + 1), boundary)
    assert r.code == 400, r.text
    assert r.json()["error"] == f"more than {MAX_FIELDS} form fields"


@pytest_twisted.ensureDeferred
async def test_multipart_fields_size_is_capped(server):
    image = await new_image(server.admin)
    boundary = "b0undary"
    value = b"v" * (60 * 1024)
    count = MAX_FIELDS_SIZE // len(value) + 1
    r = await post_multipart(server, image, multipart_fields(boundary, count, value), boundary)
    assert r.code == 413, r.text
    assert "limited to" in r.json()["error"]
    # Headers of one part count too (the parser limits each line to 4 KiB).
    padding = "".join(f"X-Padding-{i}: {'p' * 4000}\r\n" for i in range(5))
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n{padding}\r\nv\r\n'
    ).encode()
    r = await post_multipart(server, image, body, boundary)
    assert r.code == 413, r.text
    assert "part headers" in r.json()["error"]
    await eventually(lambda: staging(server) == [])


# -- request headers' deadline and connections per client ---------------------


class Dribble(Protocol):
    """Sends a request's headers one byte every *interval* seconds."""

    def __init__(self, data: bytes, interval: float) -> None:
        self.data = data
        self.interval = interval
        self.received = b""
        self.closed = False
        self.loop: task.LoopingCall | None = None

    def connectionMade(self) -> None:
        if self.data:
            self.loop = task.LoopingCall(self._one)
            self.loop.clock = reactor
            self.loop.start(self.interval)

    def _one(self) -> None:
        if self.data and not self.closed:
            self.transport.write(self.data[:1])
            self.data = self.data[1:]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.closed = True
        if self.loop is not None and self.loop.running:
            self.loop.stop()


async def connect(server, proto: Protocol) -> Protocol:
    return await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port_of(server)), proto)


@pytest_twisted.ensureDeferred
async def test_headers_sent_a_byte_at_a_time_hit_the_deadline(start_server):
    server = await start_server(header_timeout=0.5)
    started = time.monotonic()
    slow = await connect(server, Dribble(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" * 50, 0.05))
    idle = await connect(server, Dribble(b"", 1))
    await eventually(lambda: slow.closed and idle.closed, timeout=5)
    assert time.monotonic() - started < 3
    assert slow.received.startswith(b"HTTP/1.1 408 "), slow.received[:200]
    assert idle.received == b""  # nothing begun: closed without a word
    # A request that arrives in time is served, and the connection then
    # waits at most the deadline for the next one.
    keep = await connect(server, Dribble(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 0.01))
    await eventually(lambda: keep.closed, timeout=5)
    assert keep.received.startswith(b"HTTP/1.1 200 ")
    assert b"408" not in keep.received


@pytest_twisted.ensureDeferred
async def test_header_deadline_does_not_cut_a_slow_body(start_server):
    server = await start_server(header_timeout=0.3)
    image = await new_image(server.admin)
    data = b"y" * 3000
    request = head(
        f"/image/{image}",
        len(data),
        "application/octet-stream",
        server.admin.headers["Authorization"],
    )
    proto = await connect(server, Stalled(request))
    for i in range(0, len(data), 500):  # the body over about a second
        await task.deferLater(reactor, 0.15, lambda: None)
        proto.transport.write(data[i : i + 500])
    await eventually(lambda: b"\r\n\r\n" in proto.received, timeout=5)
    assert proto.received.startswith(b"HTTP/1.1 200 "), proto.received[:300]
    proto.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_connections_per_client_address_are_capped(start_server):
    server = await start_server(max_connections_per_client=3)
    held = [await connect(server, Dribble(b"", 1)) for _ in range(3)]
    await task.deferLater(reactor, 0.2, lambda: None)
    assert not any(p.closed for p in held)
    extra = await connect(server, Dribble(b"", 1))
    await eventually(lambda: extra.closed, timeout=5)
    assert not any(p.closed for p in held)
    # One goes away: there is room again.
    held[0].transport.loseConnection()
    await eventually(lambda: held[0].closed)
    await task.deferLater(reactor, 0.1, lambda: None)
    again = await connect(server, Dribble(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 0.001))
    await eventually(lambda: b"\r\n\r\n" in again.received, timeout=5)
    assert again.received.startswith(b"HTTP/1.1 200 ")
    for p in [*held[1:], again]:
        p.transport.loseConnection()
