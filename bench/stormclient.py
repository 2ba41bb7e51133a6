"""Simulated machines netbooting at once: each connects from its own
loopback address (127.1.x.y, as machines on a boot network have their
own) and does what iPXE does, on one keep-alive connection: ``GET /ipxe``,
``GET /ipxe/{mac}``, then the kernel and each initrd the script names.

One thread, non-blocking sockets and a selector: the client must cost
little next to the server under test.  Bodies of the large files are
discarded in the kernel (``recv`` with MSG_TRUNC), not copied."""

from __future__ import annotations

import random
import selectors
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

HEADER_LIMIT = 64 * 1024
CHUNK = 1 << 20


def source_address(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


@dataclass
class Machine:
    index: int
    mac: str
    start_at: float
    paths: list[str] = field(default_factory=list)
    step: int = 0
    sock: socket.socket | None = None
    head: bytes = b""
    body: bytes = b""
    remaining: int = 0
    keep_body: bool = False
    received: int = 0
    started: float = 0.0
    finished: float = 0.0
    error: str = ""


def script_files(script: str) -> list[str]:
    """The kernel and initrd URLs' paths of an iPXE script (empty if the
    script does not boot: it told the machine to use its disk)."""
    found = []
    for line in script.splitlines():
        words = line.split()
        if words[:1] == ["kernel"]:
            found.append(urlsplit(words[1]).path)
        elif words[:1] == ["initrd"]:
            found.append(urlsplit(words[-1]).path)
    return found


def storm(
    port: int, macs: list[str], spread: float, timeout: float, seed: int = 1
) -> dict[str, object]:
    """Start one machine per MAC at a random moment within *spread*
    seconds; return when all have finished or failed."""
    rng = random.Random(seed)  # noqa: S311 - arrival times, not secrets
    machines = [Machine(i, mac, rng.uniform(0, spread)) for i, mac in enumerate(macs)]
    for m in machines:
        m.paths = ["/ipxe", f"/ipxe/{m.mac}"]
    pending = sorted(machines, key=lambda m: m.start_at)
    sel = selectors.DefaultSelector()
    scratch = bytearray(CHUNK)
    t0 = time.monotonic()
    active = 0
    deadline = t0 + spread + timeout

    def fail(m: Machine, why: str) -> None:
        nonlocal active
        m.error = why
        m.finished = time.monotonic()
        if m.sock is not None:
            sel.unregister(m.sock)
            m.sock.close()
            m.sock = None
        active -= 1

    def send_next(m: Machine) -> None:
        path = m.paths[m.step]
        m.head, m.body, m.remaining = b"", b"", -1
        m.keep_body = m.step < 2
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: iPXE/1.21\r\n\r\n"
        assert m.sock is not None
        m.sock.sendall(request.encode())

    def answered(m: Machine) -> None:
        nonlocal active
        if m.step == 1:
            files = script_files(m.body.decode("utf-8", "replace"))
            if not files:
                fail(m, "the script does not boot: " + m.body[:80].decode("utf-8", "replace"))
                return
            m.paths += files
        m.step += 1
        if m.step == len(m.paths):
            m.finished = time.monotonic()
            assert m.sock is not None
            sel.unregister(m.sock)
            m.sock.close()
            m.sock = None
            active -= 1
            return
        send_next(m)

    def readable(m: Machine) -> None:
        assert m.sock is not None
        if m.remaining < 0:  # reading the head
            data = m.sock.recv(HEADER_LIMIT)
            if not data:
                fail(m, f"connection closed in step {m.step}")
                return
            m.head += data
            end = m.head.find(b"\r\n\r\n")
            if end < 0:
                if len(m.head) > HEADER_LIMIT:
                    fail(m, "header too long")
                return
            head, rest = m.head[:end].decode("latin-1"), m.head[end + 4 :]
            status = head.split(" ", 2)[1]
            if status != "200":
                fail(m, f"{m.paths[m.step]}: HTTP {status}")
                return
            length = None
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length is None:
                fail(m, f"{m.paths[m.step]}: no Content-Length")
                return
            m.remaining = length - len(rest)
            m.received += len(rest)
            if m.keep_body:
                m.body = rest
        elif m.keep_body:
            data = m.sock.recv(min(m.remaining, HEADER_LIMIT))
            if not data:
                fail(m, f"connection closed in step {m.step}")
                return
            m.body += data
            m.received += len(data)
            m.remaining -= len(data)
        else:
            n = m.sock.recv_into(scratch, min(m.remaining, CHUNK), socket.MSG_TRUNC)
            if n == 0:
                fail(m, f"connection closed in step {m.step}")
                return
            m.received += n
            m.remaining -= n
        if m.remaining == 0:
            answered(m)

    while pending or active:
        now = time.monotonic()
        if now > deadline:
            for m in machines:
                if m.sock is not None:
                    fail(m, "timed out")
            break
        while pending and pending[0].start_at <= now - t0:
            m = pending.pop(0)
            active += 1
            m.started = time.monotonic()
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((source_address(m.index), 0))
                s.connect(("127.0.0.1", port))
                s.setblocking(False)
            except OSError as e:
                m.sock = None
                fail(m, f"connect: {e}")
                continue
            m.sock = s
            sel.register(s, selectors.EVENT_READ, m)
            send_next(m)
        wait = 0.05 if not pending else max(0.0, min(0.05, pending[0].start_at - (now - t0)))
        for key, _ in sel.select(wait):
            try:
                readable(key.data)
            except OSError as e:
                fail(key.data, f"{type(e).__name__}: {e}")
    sel.close()
    done = [m for m in machines if not m.error]
    errors = [m for m in machines if m.error]
    end = max((m.finished for m in machines), default=t0)
    total = sum(m.received for m in machines)
    durations = sorted(m.finished - m.started for m in done)
    return {
        "machines": len(machines),
        "finished": len(done),
        "errors": len(errors),
        "error_samples": sorted({m.error for m in errors})[:5],
        "seconds": end - t0,
        "bytes": total,
        "bytes_per_s": total / (end - t0) if end > t0 else 0.0,
        "boot_p50_s": durations[len(durations) // 2] if durations else None,
        "boot_max_s": durations[-1] if durations else None,
    }
