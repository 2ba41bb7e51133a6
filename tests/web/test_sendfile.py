"""pxed/web/sendfile.py: the private Twisted attributes it relies on, on a
real connection, and the fallback when they are gone.

If test_private_attributes_on_a_real_connection fails after a Twisted
upgrade, Twisted changed its transport internals: adapt sendfile.py (or keep
the fallback, slower) and move the Twisted pin in setup.py."""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted
from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from pxed.web import sendfile
from tests.helpers import MIB, eventually

DATA = hashlib.shake_256(b"sendfile").digest(12 * MIB + 12345)


class _Keep(Protocol):
    def __init__(self, made: Deferred) -> None:
        self.made = made

    def connectionMade(self) -> None:
        self.made.callback(self.transport)


class _Sink(Protocol):
    def __init__(self) -> None:
        self.received = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)


@implementer(IPushProducer)
class _Producer:
    def __init__(self) -> None:
        self.resumed = 0

    def resumeProducing(self) -> None:
        self.resumed += 1

    def pauseProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_private_attributes_on_a_real_connection():
    made: Deferred = Deferred()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(lambda: _Keep(made))
    )
    sink = _Sink()
    client = await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), sink
    )
    try:
        transport = await made
        assert type(transport) is tcp.Server
        # Attributes and types, named in the failure.
        assert sendfile.missing(transport) == []
        assert sendfile.usable(transport)
        # ... and what they mean: the buffered count follows write() ...
        assert sendfile._buffered(transport) == 0
        transport.write(b"x" * 1000)
        assert sendfile._buffered(transport) == 1000
        # ... and once the buffer is sent, doWrite resumes a producer that
        # _resume_when_flushed marked paused: the wake-up sendfile waits on.
        producer = _Producer()
        transport.registerProducer(producer, True)
        sendfile._resume_when_flushed(transport)
        await eventually(lambda: producer.resumed == 1)
        assert sendfile._buffered(transport) == 0
        await eventually(lambda: sink.received == 1000)
        # The socket is the one the data goes through.
        os.write(transport.getHandle().fileno(), b"y")
        await eventually(lambda: sink.received == 1001)
        transport.unregisterProducer()
    finally:
        client.transport.abortConnection()
        await port.stopListening()


def test_missing_attributes_mean_no_sendfile(monkeypatch):
    class Renamed(tcp.Server):
        pass

    # Not a tcp.Server exactly (TLS, or anything else): no sendfile.
    assert not sendfile.usable(object.__new__(Renamed))
    # A tcp.Server without the attributes (a Twisted that renamed them).
    monkeypatch.setitem(sendfile.PRIVATE, "_renamedInAFutureTwisted", int)
    monkeypatch.setattr(sendfile, "_warned", False)
    bare = object.__new__(tcp.Server)
    assert "_renamedInAFutureTwisted" in sendfile.missing(bare)
    assert not sendfile.usable(bare)
    assert sendfile._warned  # said once, in the log


@pytest_twisted.async_yield_fixture
async def big_static(start_server, tmp_path):
    static = tmp_path / "static"
    static.mkdir()
    (static / "disk.img").write_bytes(DATA)
    yield await start_server(static_dir=str(static))


@pytest.fixture
def sendfile_calls(monkeypatch):
    calls = []
    real = os.sendfile

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(os, "sendfile", counting)
    return calls


async def _downloads_correctly(server) -> None:
    c = server.client
    r = await c.get("/static/disk.img")
    assert r.code == 200
    assert r.length == len(DATA)
    assert r.body == DATA
    r = await c.get("/static/disk.img", headers={"Range": f"bytes={3 * MIB}-{9 * MIB + 6}"})
    assert r.code == 206 and r.body == DATA[3 * MIB : 9 * MIB + 7]
    r = await c.get("/static/disk.img", headers={"Range": "bytes=0-0,5-9"})
    assert r.code == 206 and DATA[5:10] in r.body  # multipart/byteranges
    r = await c.request("HEAD", "/static/disk.img")
    assert r.code == 200 and r.body == b""


@pytest_twisted.ensureDeferred
async def test_downloads_go_by_sendfile(big_static, sendfile_calls):
    await _downloads_correctly(big_static)
    assert sendfile_calls, "plain TCP downloads should use os.sendfile"


@pytest_twisted.ensureDeferred
async def test_fallback_streams_correctly(big_static, sendfile_calls, monkeypatch):
    # What a Twisted without those attributes gets: Twisted's producers.
    monkeypatch.setitem(sendfile.PRIVATE, "_renamedInAFutureTwisted", int)
    await _downloads_correctly(big_static)
    assert sendfile_calls == []
