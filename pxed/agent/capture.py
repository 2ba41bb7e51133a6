"""Capturing a disk into a new version of its image: read the whole disk,
compress it as the image's DiskCompressionStrategy says, and stream it to
the image's UploadURL in chunked transfer encoding.  A read or compression
error aborts the upload before its body ends, so pxed stores nothing; the
sha256 pxed answers must be the one of the bytes sent.

The disk is read and compressed on a thread of its own while this one
hashes and sends."""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pxed.agent import compression
from pxed.agent.client import BodyFailed, Client, HTTPError
from pxed.agent.compression import UnknownCompression
from pxed.agent.deploy import CHUNK, rate
from pxed.agent.errors import Failed
from pxed.agent.facts import Disk
from pxed.agent.wire import ImageEntry, UploadAnswer

BUFFERS = 4


class ReadError(Exception):
    pass


class CompressError(Exception):
    pass


@dataclass(frozen=True)
class Captured:
    size: int
    sent: int
    sha256: str
    seconds: float
    answer: UploadAnswer
    strategy: str

    @property
    def rate(self) -> str:
        return rate(self.size, self.seconds)


_END = object()


class _Reader(threading.Thread):
    """Reads *size* bytes of the disk, compressed or not, into a bounded
    queue: (bytes to send, the pool buffer they are in or None), then
    _END, or the exception that stopped it."""

    def __init__(self, disk: Disk, size: int, encoder: compression.Encoder | None) -> None:
        super().__init__(name="disk-reader", daemon=True)
        self.disk = disk
        self.size = size
        self.encoder = encoder
        self.out: queue.Queue = queue.Queue(maxsize=BUFFERS)
        self.free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(BUFFERS + 2):
            self.free.put(bytearray(CHUNK))
        self.stopped = threading.Event()

    def _put(self, item: object) -> None:
        while not self.stopped.is_set():
            try:
                self.out.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def run(self) -> None:
        try:
            self._read()
            self._put(_END)
        except BaseException as e:
            self._put(e)

    def _read(self) -> None:
        try:
            f = open(self.disk.path, "rb", buffering=0)
        except OSError as e:
            raise ReadError(f"cannot open {self.disk.path}: {e.strerror or e}") from None
        with f:
            done = 0
            while done < self.size and not self.stopped.is_set():
                buf = self.free.get()
                view = memoryview(buf)[: min(CHUNK, self.size - done)]
                try:
                    n = f.readinto(view)
                except OSError as e:
                    raise ReadError(
                        f"reading {self.disk.path} at byte {done} failed: {e.strerror or e}"
                    ) from None
                if not n:
                    raise ReadError(f"{self.disk.path} ended after {done} of its {self.size} bytes")
                done += n
                if self.encoder is None:
                    self._put((view[:n], buf))
                    continue
                try:
                    data = self.encoder.feed(view[:n])
                except Exception as e:
                    raise CompressError(str(e)) from None
                finally:
                    self.free.put(buf)
                if data:
                    self._put((data, None))
            if self.encoder is not None:
                try:
                    data = self.encoder.finish()
                except Exception as e:
                    raise CompressError(str(e)) from None
                if data:
                    self._put((data, None))


def _chunks(reader: _Reader) -> Iterator[bytes | memoryview]:
    held: bytearray | None = None
    while True:
        item = reader.out.get()
        if held is not None:  # the chunk before this one has been sent
            reader.free.put(held)
            held = None
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        data, held = item
        yield data


def capture(client: Client, entry: ImageEntry, disk: Disk) -> Captured:
    try:
        strategy = compression.check(entry.compression)
    except UnknownCompression as e:
        raise Failed(str(e)) from None
    if not entry.upload_url:
        raise Failed("BootInform gave no UploadURL")
    size = disk.size
    try:
        encoder = compression.encoder(strategy, size)
    except compression.DecodeError as e:  # zstandard missing
        raise Failed(str(e)) from None
    started = time.monotonic()
    sha = hashlib.sha256()
    sent = 0

    def count(chunk: bytes | memoryview) -> None:
        nonlocal sent
        sha.update(chunk)
        sent += len(chunk)

    reader = _Reader(disk, size, encoder)
    reader.start()
    try:
        answer = client.upload(entry.upload_url, _chunks(reader), sent=count)
    except BodyFailed as e:
        if isinstance(e.cause, CompressError):
            raise Failed(
                f"{strategy} compression failed, upload aborted (nothing stored): {e.cause}"
            ) from None
        raise Failed(f"reading {disk.path} failed, upload aborted (nothing stored): {e}") from None
    except HTTPError as e:
        raise Failed(f"upload failed ({e})") from None
    except OSError as e:
        raise Failed(f"upload failed: {e}") from None
    finally:
        reader.stopped.set()
        reader.join(5)
    try:
        stored = UploadAnswer.from_json(answer.json())
    except ValueError as e:
        raise Failed(f"pxed's answer to the upload: {e}") from None
    digest = sha.hexdigest()
    if stored.sha256 and stored.sha256.lower() != digest:
        raise Failed(f"pxed stored sha256 {stored.sha256} but the agent sent {digest}")
    return Captured(size, sent, digest, time.monotonic() - started, stored, strategy)
