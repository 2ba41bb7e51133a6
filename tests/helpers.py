"""What tests import: the HTTP client and the ``Server`` the fixtures in
conftest.py hand out, the sample MAC and sizes, and the few steps most API
tests start with (a machine, an image, an upload, a queued setup, the
machine credential a netboot answer carries).  Add a helper here when a
second test module needs it, not a copy in the module."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from twisted.internet import protocol, reactor, task, threads
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from pxed import config as pxed_config
from pxed import service

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

MAC = "52:54:00:12:34:56"
OTHER_MAC = "52:54:00:ab:cd:ef"
MIB = 1024 * 1024
OCTETS = {"Content-Type": "application/octet-stream"}


def only_on(database: str, reason: str) -> pytest.MarkDecorator:
    """On a test (or in a module's pytestmark): the servers it starts run on
    *database* alone, not on each in turn (the ``database`` fixture in
    tests/conftest.py).  For a test that is about that database -- *reason*
    says how, for the reader."""
    assert reason, "say why the test is about one database"
    return pytest.mark.parametrize("database", [database], indirect=True)


# Every server test runs on both databases now (the ``database`` fixture);
# this marker says it explicitly, and keeps tests that used it working.
both_databases = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)


# The twistd script of the interpreter running the tests: the one pip installed.
TWISTD = [str(Path(sys.executable).with_name("twistd"))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 20) -> bytes:
    """*url*'s body once a twistd started as *proc* answers it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"twistd exited with {proc.returncode}: {out}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback)
                return r.read()
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


def missing(message: str) -> None:
    """A prerequisite of the test is not on this machine: in CI the test
    fails, elsewhere it is skipped with *message*."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_tool(tool: str, package: str) -> str:
    """The path of *tool*; if missing, see ``missing`` (with the Debian
    package to install)."""
    path = shutil.which(tool)
    if path is None:
        missing(f"{tool} not found: apt-get install {package}")
    return path


@dataclass
class Response:
    code: int
    headers: Headers
    body: bytes
    # Twisted's client takes Content-Length out of the headers.
    length: int | None = None

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


@dataclass
class Client:
    """HTTP against a running server; *headers* go with every request."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)

    async def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        all_headers = {**self.headers, **(headers or {})}
        if json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        return await self.raw(
            method.encode(),
            path.encode(),
            {k.encode(): v.encode() for k, v in all_headers.items()},
            data,
        )

    async def raw(
        self,
        method: bytes,
        path: bytes,
        headers: dict[bytes, bytes] | None = None,
        data: bytes | None = None,
    ) -> Response:
        """A request whose path goes on the wire byte for byte, answered
        as sent (no redirects followed, no content decoding)."""
        agent = Agent(reactor)
        h = Headers({k: [v] for k, v in (headers or {}).items()})
        producer = None if data is None else FileBodyProducer(BytesIO(data))
        response = await agent.request(method, self.url.encode() + path, h, producer)
        ctype = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        if ctype.startswith(b"text/event-stream"):
            # A stream does not end: its first message stands for the body.
            body = await _first_message(response)
        else:
            body = await readBody(response)
        length = response.length if isinstance(response.length, int) else None
        return Response(response.code, response.headers, body, length)

    async def head_headers(self, path: str) -> dict[str, str]:
        """The headers of a HEAD answer as sent; Twisted's client hides
        Content-Length on HEAD, so curl asks."""
        curl = require_tool("curl", "curl")
        args = [curl, "-sS", "-I", self.url + path]
        for k, v in self.headers.items():
            args += ["-H", f"{k}: {v}"]
        done = await threads.deferToThread(
            subprocess.run, args, capture_output=True, text=True, timeout=30
        )
        lines = done.stdout.splitlines()
        out = {"status": lines[0].split()[1]}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                out[k.strip().lower()] = v.strip()
        return out

    def get(self, path: str, **kw: Any):
        return self.request("GET", path, **kw)

    def post(self, path: str, json_body: Any = None, **kw: Any):
        return self.request("POST", path, json_body=json_body, **kw)

    def put(self, path: str, json_body: Any = None, **kw: Any):
        return self.request("PUT", path, json_body=json_body, **kw)

    def delete(self, path: str, **kw: Any):
        return self.request("DELETE", path, **kw)

    def with_headers(self, **headers: str) -> Client:
        return Client(self.url, {**self.headers, **headers})

    def bearer(self, token: str) -> Client:
        return Client(self.url, {"Authorization": f"Bearer {token}"})


def _exchange(url: str, raw: bytes, timeout: float = 10.0) -> bytes:
    """*raw* sent byte for byte on a new connection; all that comes back
    until the server closes it or *timeout* passes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        try:
            s.sendall(raw)
        except OSError:  # the server may answer and close before reading it all
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


async def send_raw(url: str, raw: bytes) -> Response:
    """A request as bytes (what an HTTP client would refuse to send)."""
    answer = await threads.deferToThread(_exchange, url, raw)
    assert answer, "no response at all"
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = Headers()
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers.addRawHeader(name.strip(), value.strip())
    return Response(status, headers, body)


@dataclass
class Server:
    """A running pxed (the ``server`` and ``start_server`` fixtures)."""

    pxed: service.Pxed
    config: pxed_config.Config
    url: str
    anonymous: Client
    admin: Client

    @property
    def db(self):
        return self.pxed.db

    @property
    def client(self) -> Client:
        return self.admin

    async def user(self, username: str, role: str = "user") -> Client:
        """A new user with that role, and a client carrying its API token."""
        r = await self.admin.post(
            "/user", {"Username": username, "Role": role, "Email": f"{username}@example.org"}
        )
        assert r.code == 201, r.text
        r = await self.admin.post(f"/user/{username}/tokens", {"Name": "test"})
        assert r.code == 201, r.text
        return self.anonymous.bearer(r.json()["Token"])


def sqlite_file(cfg: pxed_config.Config) -> Path | None:
    """The SQLite file a server's database is, None if it is not one."""
    url = sa.engine.make_url(cfg.database_url)
    return Path(url.database) if url.get_backend_name() == "sqlite" and url.database else None


class WriteLock:
    """Another process's writer, as far as the server can tell: a connection
    of its own that takes, when asked, SQLite's write lock (the whole
    database's) or on PostgreSQL a lock on *table* that keeps writes to it
    out and lets reads in (EXCLUSIVE), until released."""

    def __init__(self, server: Server, table: str) -> None:
        self.sqlite = sqlite_file(server.config)
        self.table = table
        if self.sqlite is not None:
            self.conn = sqlite3.connect(
                self.sqlite, timeout=0, isolation_level=None, check_same_thread=False
            )
        else:
            self.engine = sa.create_engine(server.config.database_url, poolclass=sa.NullPool)
            self.conn = self.engine.connect()

    def take(self) -> WriteLock:
        if self.sqlite is not None:
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            self.conn.exec_driver_sql(f'LOCK TABLE "{self.table}" IN EXCLUSIVE MODE')
        return self

    def close(self) -> None:
        if self.conn.in_transaction:
            self.conn.rollback()
        self.conn.close()
        if self.sqlite is None:
            self.engine.dispose()


async def add_machine(
    server: Server,
    mac: str = MAC,
    name: str = "m",
    managed: bool = True,
    arch: str | None = None,
    erase: str | None = None,
) -> dict:
    """A machine created by the admin (with the erase policy *erase*, else
    pxed's default); its JSON."""
    body: dict[str, Any] = {"Name": name, "Managed": managed, "MacAddresses": [{"Mac": mac}]}
    if arch is not None:
        body["Architecture"] = arch
    if erase is not None:
        body["Erase"] = erase
    r = await server.admin.post("/machine", body)
    assert r.code == 201, r.text
    return r.json()


async def new_image(client: Client, name: str = "disk", size: int = MIB) -> str:
    """A small raw image owned by the client's user; its UUID."""
    r = await client.post("/image", {"Name": name, "Size": size})
    assert r.code == 201, r.text
    return r.json()["UUID"]


async def upload(
    client: Client, path: str, data: bytes, headers: dict[str, str] | None = None
) -> Response:
    """*data* POSTed raw to *path* (``/image/{uuid}`` or a machine's
    ``/machine/{mac}/disk/{uuid}``), asking for a JSON answer unless
    *headers* ask otherwise."""
    return await client.request(
        "POST", path, data=data, headers={**OCTETS, "Accept": "application/json", **(headers or {})}
    )


async def upload_version(client: Client, image_uuid: str, data: bytes) -> int:
    """*data* uploaded as the image's next version; its number."""
    r = await upload(client, f"/image/{image_uuid}", data)
    assert r.code == 200, r.text
    return r.json()["Version"]


async def new_setup(client: Client, user: str, images: list[dict], name: str = "s") -> dict:
    """An image setup of *user*'s; its JSON."""
    r = await client.post(f"/user/{user}/image_setup", {"Name": name, "Images": images})
    assert r.code == 201, r.text
    return r.json()


def entries(setup: dict) -> list[dict]:
    """A setup's ImageFrozen entries (the original's ``{"Image": {…},
    "Version": {"Version"…}, "Update"}``) as flat ``{UUID, Version,
    Update}``, for comparing."""
    return [
        {"UUID": e["Image"]["UUID"], "Version": e["Version"]["Version"], "Update": e["Update"]}
        for e in setup["Images"]
    ]


async def enqueue(
    client: Client, images: list[dict], mac: str = MAC, user: str = "alice", name: str = "s"
) -> dict:
    """A new setup of *images* queued for the machine; the queue entry."""
    setup = await new_setup(client, user, images, name)
    r = await client.post(f"/machine/{mac}/boot", {"SetupUUID": setup["UUID"]})
    assert r.code == 200, r.text
    return r.json()


async def queued(server: Server, mac: str = MAC) -> dict:
    """A machine with work queued: alice's new (empty) image; the entry."""
    await add_machine(server, mac)
    alice = await server.user("alice")
    disk = await new_image(alice)
    return await enqueue(alice, [{"UUID": disk}], mac)


async def machine_token(server: Server, mac: str = MAC) -> str:
    """The machine credential a netboot answer puts on the kernel cmdline
    (the same for one work item until it ends)."""
    r = await server.anonymous.get(f"/v1/boot/{mac}")
    assert r.code == 200, r.text
    cmdline = r.json()["cmdline"]
    assert f"pxed.mac={mac}" in cmdline
    return cmdline.split("pxed.token=")[1].split()[0]


async def machine_client(server: Server, mac: str = MAC) -> Client:
    """A client carrying the machine credential, as the management OS."""
    return server.anonymous.bearer(await machine_token(server, mac))


async def machine_events(client: Client, mac: str = MAC) -> list:
    """The machine's events, oldest first."""
    r = await client.get(f"/machine/{mac}/events")
    assert r.code == 200, r.text
    return list(reversed(r.json()))


async def eventually(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]], timeout: float = 10.0
) -> None:
    """Wait until *check()* (a function or a coroutine function) holds:
    work the server finishes just after it answers, such as removing files
    or writing repeated boot answers to the event log."""

    async def holds() -> bool:
        result = check()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    for _ in range(int(timeout / 0.05)):
        if await holds():
            return
        await task.deferLater(reactor, 0.05, lambda: None)
    assert await holds()


def multipart(parts: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body of *parts* (field: (filename, data)) and
    its Content-Type header."""
    boundary = "pxedtestboundary"
    body = b""
    for name, (filename, data) in parts.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n").encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def submit(
    client: Client,
    image: str,
    dockerfile: str,
    fmt: str | None = None,
    context: bytes | None = None,
) -> dict:
    """A Docker build of *dockerfile* (with a context tar.gz) into *image*,
    accepted; the build's JSON."""
    parts = {"file": ("Dockerfile", dockerfile.encode())}
    if context is not None:
        parts["context"] = ("context.tar.gz", context)
    body, headers = multipart(parts)
    path = f"/image/{image}/docker" + (f"?format={fmt}" if fmt else "")
    r = await client.request("POST", path, data=body, headers=headers)
    assert r.code == 202, r.text
    return r.json()


async def wait_done(client: Client, build_id: int, timeout: float = 180) -> dict:
    """The build once it has ended (succeeded, failed or cancelled)."""
    for _ in range(int(timeout / 0.25)):
        build = (await client.get(f"/build/{build_id}")).json()
        if build["State"] in ("succeeded", "failed", "cancelled"):
            return build
        await task.deferLater(reactor, 0.25, lambda: None)
    raise AssertionError(f"build {build_id} did not finish: {build}")


async def _first_message(response: Any) -> bytes:
    received = _FirstMessage()
    response.deliverBody(received)
    return await received.done


class _FirstMessage(protocol.Protocol):
    def __init__(self) -> None:
        self.done: Deferred[bytes] = Deferred()
        self._data = b""

    def dataReceived(self, data: bytes) -> None:
        self._data += data
        if b"\n\n" in self._data and not self.done.called:
            self.transport.stopProducing()
            self.done.callback(self._data)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(self._data)


class EventSource:
    """``GET /events/stream`` read as it arrives, as a browser's
    EventSource would: ``await next()`` gives ``(event, data)`` in order
    (data parsed as JSON; a comment is ``(":", text)``)."""

    def __init__(self) -> None:
        self.code = 0
        self.headers: Headers | None = None
        self.body = b""  # the answer, when it was not a stream
        self.ended: Deferred = Deferred()
        self._queue: DeferredQueue = DeferredQueue()
        self._buffer = b""
        self._transport: Any = None

    @classmethod
    async def open(cls, client: Client, query: str = "") -> EventSource:
        source = cls()
        h = Headers({k.encode(): [v.encode()] for k, v in client.headers.items()})
        url = f"{client.url}/events/stream{'?' + query if query else ''}"
        response = await Agent(reactor).request(b"GET", url.encode(), h)
        source.code, source.headers = response.code, response.headers
        if response.code != 200:
            source.body = await readBody(response)
            return source
        response.deliverBody(_EventSourceProtocol(source))
        return source

    async def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        d = self._queue.get()
        call = reactor.callLater(timeout, d.cancel)
        try:
            return await d
        finally:
            if call.active():
                call.cancel()

    async def until(
        self, kind: str, check: Callable[[Any], bool] = lambda _: True, timeout: float = 15.0
    ) -> Any:
        """The data of the next *kind* message that passes *check*."""
        deadline = time.monotonic() + timeout
        while True:
            got, data = await self.next(max(0.01, deadline - time.monotonic()))
            if got == kind and check(data):
                return data

    def received(self, data: bytes) -> None:
        self._buffer += data.replace(b"\r\n", b"\n")
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            kind, lines = "message", []
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    self._queue.put((":", line[1:].strip()))
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    lines.append(line[5:].strip())
            if lines:
                self._queue.put((kind, json.loads("\n".join(lines))))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.stopProducing()


class _EventSourceProtocol(protocol.Protocol):
    def __init__(self, source: EventSource) -> None:
        self._source = source

    def connectionMade(self) -> None:
        self._source._transport = self.transport

    def dataReceived(self, data: bytes) -> None:
        self._source.received(data)

    def connectionLost(self, reason: Any = None) -> None:
        self._source.ended.callback(None)
