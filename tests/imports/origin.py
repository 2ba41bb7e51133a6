"""A web server in the test process that imports fetch from: the disks
made here (raw, qcow2 by Debian's qemu-img, xz), a redirect to any URL,
a body that never ends and an answer that never comes; and the same over
HTTPS with a certificate nobody trusts.  It listens on
127.0.0.1 and 127.0.0.2 (both loopback on Linux), so a test can allow one
and show the other would have served."""

from __future__ import annotations

import hashlib
import lzma
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from twisted.internet import reactor, ssl, task
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.static import File

from tests.helpers import MIB, require_tool

DISK_SIZE = 4 * MIB


def raw_disk() -> bytes:
    """4 MiB: data at the start, in the middle and at the end, zeros
    between (qemu-img leaves those out of the qcow2 and makes holes of
    them again)."""
    disk = bytearray(DISK_SIZE)
    for offset in (0, DISK_SIZE // 2, DISK_SIZE - 64 * 1024):
        disk[offset : offset + 64 * 1024] = hashlib.shake_256(str(offset).encode()).digest(
            64 * 1024
        )
    return bytes(disk)


def make_disks(directory: Path) -> dict[str, Path]:
    """disk.img (raw), disk.qcow2, disk.img.xz and backed.qcow2 (a qcow2
    whose backing file is disk.img) in *directory*."""
    qemu_img = require_tool("qemu-img", "qemu-utils")
    raw = directory / "disk.img"
    raw.write_bytes(raw_disk())
    qcow2 = directory / "disk.qcow2"
    subprocess.run(
        [qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True
    )
    xz = directory / "disk.img.xz"
    xz.write_bytes(lzma.compress(raw.read_bytes(), format=lzma.FORMAT_XZ))
    backed = directory / "backed.qcow2"
    subprocess.run(
        [qemu_img, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(raw), str(backed)],
        check=True,
    )
    return {"raw": raw, "qcow2": qcow2, "xz": xz, "backed": backed}


class Redirect(Resource):
    """/redirect?to=<url>: a 302 to it."""

    isLeaf = True

    def render_GET(self, request):
        request.redirect(request.args[b"to"][0])
        return b""


class Endless(Resource):
    """A body without a Content-Length that never ends; how much was sent
    is kept, to show the importer stopped reading."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.closed = 0

    def render_GET(self, request):
        piece = bytes(64 * 1024)

        def more() -> None:
            request.write(piece)
            self.sent += len(piece)

        loop = task.LoopingCall(more)
        loop.start(0.001)

        def gone(_) -> None:
            self.closed += 1
            loop.stop()

        request.notifyFinish().addBoth(gone)
        return NOT_DONE_YET


class Stall(Resource):
    """Takes the request and never answers."""

    isLeaf = True

    def render_GET(self, request):
        return NOT_DONE_YET


@dataclass
class Origin:
    port: int
    endless: Endless
    listening: list
    # HTTPS with a self-signed certificate, which imports must not trust.
    tls_port: int

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def redirect(self, to: str, times: int = 1) -> str:
        """A URL that redirects (*times* hops) to *to*."""
        for _ in range(times):
            to = self.url(f"/redirect?to={quote(to, safe='')}")
        return to

    async def stop(self) -> None:
        for port in self.listening:
            await port.stopListening()


async def serve(directory: Path) -> Origin:
    """The origin on 127.0.0.1 and 127.0.0.2 (the same port), serving
    *directory* under /files/."""
    root = Resource()
    root.putChild(b"files", File(str(directory)))
    root.putChild(b"redirect", Redirect())
    endless = Endless()
    root.putChild(b"endless", endless)
    root.putChild(b"stall", Stall())
    site = Site(root)
    first = reactor.listenTCP(0, site, interface="127.0.0.1")
    port = first.getHost().port
    second = reactor.listenTCP(port, site, interface="127.0.0.2")
    cert = ssl.KeyPair.generate(size=2048).selfSignedCert(1, CN="127.0.0.1")
    tls = reactor.listenSSL(0, site, cert.options(), interface="127.0.0.1")
    return Origin(port, endless, [first, second, tls], tls.getHost().port)
