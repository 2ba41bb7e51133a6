"""The agent on the host against a real pxed over loopback: ``agent_run``
runs ``python -m pxed.agent`` as the management OS would, but with disks
that are files in tmp_path and its facts from a JSON file; ``proxy`` puts
a TCP relay between the agent and pxed that can cut a connection after so
many bytes or slow it down.

The servers here run on SQLite only: these tests are about the agent's
side of the protocol, which the API tests cover on both databases."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from tests.helpers import MAC, MIB, Server, add_machine, enqueue, machine_token

ROOT = Path(__file__).resolve().parent.parent.parent
# A machine as the facts file describes it (no disks: they come by --disk).
FACTS: dict[str, Any] = {
    "Arch": "x86_64",
    "Kernel": "6.1.0-test",
    "CPU": {"Model": "Test CPU @ 2.0GHz", "Count": 4},
    "Memory": 8 * 1024 * MIB,
    "Firmware": "uefi",
    "DMI": {"Vendor": "ACME", "Product": "Rack 9000", "Serial": "SN-0042"},
    "NICs": [{"MAC": MAC, "Driver": "virtio_net", "Link": True, "Speed": 1000}],
}


@pytest.fixture
def database() -> str:
    """SQLite only (see the module's docstring)."""
    return "sqlite"


def data(size: int, seed: int = 1) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def disk_file(path: Path, size: int, fill: bytes = b"") -> Path:
    with open(path, "wb") as f:
        f.write(fill)
        f.truncate(size)
    return path


@dataclass
class AgentRun:
    code: int | None
    output: str

    def lines(self) -> list[str]:
        return self.output.splitlines()


class _Collect(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


async def run_agent(
    args: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 60,
    terminate_after: float | None = None,
) -> AgentRun:
    """``python -m pxed.agent *args*`` in a child process, as the
    management OS runs it (sent SIGTERM after *terminate_after* seconds,
    if given); the reactor keeps serving meanwhile."""
    proto = _Collect()
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    argv = [sys.executable, "-m", "pxed.agent", *args]
    transport = reactor.spawnProcess(proto, sys.executable, argv, env=environ, path=str(ROOT))
    calls = [reactor.callLater(timeout, transport.signalProcess, "KILL")]
    if terminate_after is not None:
        calls.append(reactor.callLater(terminate_after, transport.signalProcess, "TERM"))
    code = await proto.ended
    for call in calls:
        if call.active():
            call.cancel()
    return AgentRun(code, proto.output.decode("utf-8", "replace"))


@dataclass
class Machine:
    """A machine of *server*'s with work queued, and how to run its agent."""

    server: Server
    tmp: Path
    token: str = ""
    mac: str = MAC
    url: str = ""
    facts: dict[str, Any] = field(default_factory=lambda: dict(FACTS))

    async def agent(
        self,
        disks: list[Path],
        *extra: str,
        env: dict[str, str] | None = None,
        url: str | None = None,
        facts: dict[str, Any] | None = None,
        terminate_after: float | None = None,
    ) -> AgentRun:
        facts_file = self.tmp / f"facts-{len(list(self.tmp.glob('facts-*')))}.json"
        facts_file.write_text(json.dumps(facts if facts is not None else self.facts))
        args = [
            "--url", url or self.url or self.server.url,
            "--mac", self.mac,
            "--after", "exit",
            "--facts", str(facts_file),
            "--workdir", str(self.tmp / "work"),
            "--connect-tries", "2",
            "--retry-delay", "0.2",
            "--disk-wait", "0",
            *[a for d in disks for a in ("--disk", str(d))],
            *extra,
        ]  # fmt: skip
        (self.tmp / "work").mkdir(exist_ok=True)
        return await run_agent(
            args, {"PXED_TOKEN": self.token, **(env or {})}, terminate_after=terminate_after
        )

    async def work(self) -> dict:
        """The machine's last work (its queue entry's state and message)."""
        events = (await self.server.admin.get(f"/machine/{self.mac}/events")).json()
        ends = [e for e in events if e["Action"] in ("queue.done", "queue.failed")]
        machine = (await self.server.admin.get(f"/machine/{self.mac}")).json()
        return {"State": machine["State"], "Ends": ends, "Machine": machine}

    async def logs(self) -> list[str]:
        r = await self.server.admin.get(f"/machine/{self.mac}/logs")
        return [line["Message"] for line in r.json()]


async def image(server: Server, name: str, compression: str = "none") -> str:
    r = await server.admin.post(
        "/image", {"Name": name, "Size": MIB, "DiskCompressionStrategy": compression}
    )
    assert r.code == 201, r.text
    return r.json()["UUID"]


async def stored_version(server: Server, uuid: str, blob: bytes) -> int:
    r = await server.admin.request(
        "POST",
        f"/image/{uuid}",
        data=blob,
        headers={"Content-Type": "application/octet-stream", "Accept": "application/json"},
    )
    assert r.code == 200, r.text
    return r.json()["Version"]


def version_file(server: Server, uuid: str, version: int) -> Path:
    return Path(server.config.data_dir) / "images" / uuid / f"{version}.img"


@pytest.fixture
def machine_with(server: Server, tmp_path: Path) -> Callable:
    """``await machine_with([(stored bytes, compression, update), ...],
    hints=[root device hints or None, ...], erase=policy)``: the machine,
    one image per entry (its version 1 the stored bytes, or none if they
    are None), queued in that order; the Machine and the images' UUIDs and
    versions.  Its erase policy is none unless *erase* says otherwise:
    the tests of deploying check the bytes beyond the image as they were
    (tests/agent/test_erase.py tests erasing)."""

    async def make(
        entries: list[tuple[bytes | None, str, bool]],
        name: str = "setup",
        hints: list[dict | None] | None = None,
        erase: str = "none",
    ):
        await add_machine(server, erase=erase)
        made = []
        for i, (blob, compression, _) in enumerate(entries):
            uuid = await image(server, f"img{i}", compression)
            version = await stored_version(server, uuid, blob) if blob is not None else 0
            made.append((uuid, version))
        await enqueue(
            server.admin,
            [
                {"UUID": u, "Version": v, "Update": e[2], "DiskHints": h}
                for (u, v), e, h in zip(made, entries, hints or [None] * len(made), strict=True)
            ],
            user="admin",
            name=name,
        )
        token = await machine_token(server)
        return Machine(server, tmp_path, token), made

    return make


class _Upstream(protocol.Protocol):
    def __init__(self, front: _Front) -> None:
        self.front = front

    def dataReceived(self, data: bytes) -> None:
        self.front.from_server(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.front.transport.loseConnection()


class _Front(protocol.Protocol):
    """One client connection of the relay, and its own to pxed."""

    upstream: _Upstream | None = None

    def connectionMade(self) -> None:
        self.pending: list[bytes] = []
        self.sent = 0
        self.cut = False
        point = TCP4ClientEndpoint(reactor, "127.0.0.1", self.factory.port)
        d = point.connect(protocol.Factory.forProtocol(lambda: _Upstream(self)))
        d.addCallbacks(self._connected, lambda _: self.transport.abortConnection())

    def _connected(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        for data in self.pending:
            upstream.transport.write(data)
        self.pending = []

    def dataReceived(self, data: bytes) -> None:
        if not hasattr(self, "slow"):
            path = data.split(b" ", 2)[1].decode() if data.count(b" ") >= 2 else ""
            self.slow = path.startswith(self.factory.relay.slow_paths)
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.transport.write(data)

    def from_server(self, data: bytes) -> None:
        relay: Proxy = self.factory.relay
        if self.cut:
            return
        if relay.cut_after is not None and self.sent + len(data) > relay.cut_after:
            self.transport.write(data[: relay.cut_after - self.sent])
            self.cut = True
            relay.cuts += 1
            self.transport.abortConnection()
            if self.upstream is not None:
                self.upstream.transport.abortConnection()
            return
        self.sent += len(data)
        self.transport.write(data)
        if relay.rate and getattr(self, "slow", False) and self.upstream is not None:
            upstream = self.upstream.transport
            upstream.pauseProducing()
            reactor.callLater(len(data) / relay.rate, upstream.resumeProducing)

    def connectionLost(self, reason: Any = None) -> None:
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


@dataclass
class Proxy:
    """A relay to pxed: *cut_after* bytes of any one answer, then both
    connections dropped; or the answers to requests for *slow_paths* (the
    images, not the machine image) sent at *rate* bytes per second."""

    url: str = ""
    cut_after: int | None = None
    rate: float | None = None
    slow_paths: tuple[str, ...] = ("/image/",)
    cuts: int = 0


@pytest_twisted.async_yield_fixture
async def proxy(server: Server):
    relay = Proxy()
    factory = protocol.Factory.forProtocol(_Front)
    factory.port = int(server.url.rsplit(":", 1)[1])
    factory.relay = relay
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    relay.url = f"http://127.0.0.1:{port.getHost().port}"
    yield relay
    await port.stopListening()
