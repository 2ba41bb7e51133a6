"""Shared fixtures: a real pxed on an ephemeral loopback port, driven over
HTTP, with a fresh SQLite file per test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from pxed import config as pxed_config
from pxed import service

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(tool: str, package: str) -> str:
    """The path of *tool*; in CI a missing tool fails the test, elsewhere it
    skips with the Debian package to install."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} not found: apt-get install {package}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
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


@dataclass
class Server:
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


ServerFactory = Callable[..., Any]

MAC = "52:54:00:12:34:56"
MIB = 1024 * 1024


async def add_machine(
    server: Server, mac: str = MAC, name: str = "m", managed: bool = True
) -> dict:
    """A machine created by the admin; its JSON."""
    r = await server.admin.post(
        "/machine", {"Name": name, "Managed": managed, "MacAddresses": [{"Mac": mac}]}
    )
    assert r.code == 200, r.text
    return r.json()


async def new_image(client: Client, name: str = "disk", size: int = MIB) -> str:
    """A small raw image owned by the client's user; its UUID."""
    r = await client.post("/image", {"Name": name, "Size": size})
    assert r.code == 200, r.text
    return r.json()["UUID"]


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until *check()* holds (work the server finishes just after it
    answers, such as removing files)."""
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await task.deferLater(reactor, 0.05, lambda: None)
    assert check()


@pytest_twisted.async_yield_fixture
async def start_server(tmp_path: Path):
    """A factory: ``await start_server(boot_policy="always", …)`` starts pxed
    with those settings (and *config_text*, TOML, beneath them) in a fresh
    data dir; all are stopped afterwards."""
    running: list[service.Pxed] = []

    async def start(config_text: str | None = None, **settings: Any) -> Server:
        data_dir = tmp_path / f"data{len(running)}"
        settings.setdefault("data_dir", str(data_dir))
        settings.setdefault("port", "tcp:0:interface=127.0.0.1")
        config_file = None
        if config_text is not None:
            config_file = tmp_path / f"pxed{len(running)}.toml"
            config_file.write_text(config_text)
        cfg = pxed_config.load(config_file, settings)
        px = service.build(cfg, reactor)
        px.service.startService()
        # Stopped at teardown even if what follows fails: a pool thread
        # left running would keep the test process from exiting.
        running.append(px)
        port = await px.web.endpoint.listening
        url = f"http://127.0.0.1:{port.getHost().port}"
        token = (Path(cfg.data_dir) / "admin.token").read_text().strip()
        anonymous = Client(url)
        return Server(px, cfg, url, anonymous, anonymous.bearer(token))

    yield start
    for px in reversed(running):
        if px.service.running:
            await px.service.stopService()


@pytest_twisted.async_yield_fixture
async def server(start_server):
    yield await start_server()


@pytest.fixture
def client(server: Server) -> Client:
    return server.client
