"""Writing an image to a disk: stream its URL, hash the stored bytes, and
decompress them onto the disk, then fsync.  The sha256 and size must be
BootInform's, or the work fails (saying the disk holds damaged data when
it was written).

Two threads share the work: this one receives into 1 MiB buffers and
hashes them; the writer decompresses and writes.  hashlib, zlib,
python-zstandard and the socket and file calls release the GIL on large
buffers, so both cores work; a small pool of buffers bounds what is in
flight and keeps memory flat."""

from __future__ import annotations

import hashlib
import http.client
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pxed.agent import compression, disks
from pxed.agent.client import Client, Download
from pxed.agent.compression import DecodeError, UnknownCompression, ZstdFrames
from pxed.agent.errors import Failed
from pxed.agent.facts import Disk
from pxed.agent.progress import ProgressReporter
from pxed.agent.wire import ImageEntry

CHUNK = 1 << 20
BUFFERS = 8
RAW_TYPES = ("raw", "", "null")


@dataclass(frozen=True)
class Deployed:
    written: int
    downloaded: int
    seconds: float
    strategy: str

    @property
    def rate(self) -> str:
        return rate(self.written, self.seconds)


def rate(size: int, seconds: float) -> str:
    return f"{size / max(seconds, 0.01) / 1e6:.1f} MB/s"


class _Writer(threading.Thread):
    """Decompresses and writes what the receiver queues, in order; on an
    error it keeps taking (and freeing) buffers so the receiver never
    blocks, and keeps the error for it."""

    def __init__(self, strategy: str, sink: disks.DiskWriter) -> None:
        super().__init__(name="disk-writer", daemon=True)
        self.strategy = strategy
        self.sink = sink
        self.free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self.full: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self._ended = False
        for _ in range(BUFFERS):
            self.free.put(bytearray(CHUNK))

    def _chunks(self) -> Iterator[memoryview]:
        """The received chunks; each buffer goes back to the pool when the
        next chunk is asked for (the decoder is done with it then)."""
        held: bytearray | None = None
        try:
            while (item := self.full.get()) is not None:
                if held is not None:
                    self.free.put(held)
                held, n = item
                yield memoryview(held)[:n]
            self._ended = True
        finally:
            if held is not None:
                self.free.put(held)

    def run(self) -> None:
        try:
            compression.decode(self.strategy, self._chunks(), self.sink)
            if not self._ended:
                raise DecodeError("the stream goes on after its compressed data ends")
        except BaseException as e:
            self.error = e
            while not self._ended and (item := self.full.get()) is not None:
                self.free.put(item[0])


def check_entry(entry: ImageEntry) -> str:
    """The entry's compression, once what it asks for is something this
    agent can write; else Failed with the reason."""
    try:
        strategy = compression.check(entry.compression)
    except UnknownCompression as e:
        raise Failed(str(e)) from None
    if entry.file_type not in RAW_TYPES:
        raise Failed(
            f"ImageFileType {entry.file_type!r}: this management OS writes raw images only"
        )
    if not entry.sha256 or not all(c in "0123456789abcdef" for c in entry.sha256.lower()):
        raise Failed("BootInform gives no sha256 for this version (does it exist?)")
    if not entry.url:
        raise Failed("BootInform gives no URL for this image")
    if strategy == "zstd":
        try:
            compression.zstandard_module()
        except DecodeError as e:
            raise Failed(str(e)) from None
    return strategy


def deploy(client: Client, mac: str, entry: ImageEntry, disk: Disk) -> Deployed:
    strategy = check_entry(entry)
    want_sha = (entry.sha256 or "").lower()
    try:
        fd, limit = disks.open_for_writing(disk)
    except OSError as e:
        raise Failed(f"cannot open {disk.path} for writing: {e.strerror or e}") from None
    try:
        return _deploy(client, mac, entry, disk, strategy, want_sha, fd, limit)
    finally:
        os.close(fd)


def _deploy(
    client: Client,
    mac: str,
    entry: ImageEntry,
    disk: Disk,
    strategy: str,
    want_sha: str,
    fd: int,
    limit: int,
) -> Deployed:
    size = entry.size
    if strategy == "none" and size is not None and size > limit:
        raise Failed(f"the image ({size} bytes) is larger than {disk.path} ({limit} bytes)")
    started = time.monotonic()
    try:
        download = client.download(entry.url or "")
    except Exception as e:
        raise Failed(f"download failed: {e}") from None
    try:
        if download.length is not None and size is not None and download.length != size:
            raise Failed(
                f"size mismatch: pxed sends {download.length} bytes, BootInform says {size}; "
                f"nothing written"
            )
        sink = disks.DiskWriter(fd, limit, disk.path)
        writer = _Writer(strategy, sink)
        progress = ProgressReporter(client, mac, entry.uuid, size) if size else None
        if progress is not None:
            progress.start()
        verified = False
        try:
            got, sha, download_error = _receive(
                download, writer, size, strategy, limit, disk, progress
            )
            sink.close()  # the writeback hand-offs, before fsync
            _verdict(writer, download_error, got, sha, want_sha, size, strategy, disk)
            try:
                os.fsync(fd)
            except OSError as e:
                raise Failed(f"writing {disk.path} failed (fsync): {e.strerror or e}") from None
            verified = True
        finally:
            sink.close()
            if progress is not None:
                progress.stop(verified)
    finally:
        download.close()
    return Deployed(sink.offset, got, time.monotonic() - started, strategy)


def _receive(
    download: Download,
    writer: _Writer,
    size: int | None,
    strategy: str,
    limit: int,
    disk: Disk,
    progress: ProgressReporter | None,
) -> tuple[int, str, str | None]:
    """Receive and hash everything, handing it to *writer*; (bytes
    received, their sha256, why the download broke off or None)."""
    sha = hashlib.sha256()
    got = 0
    error: str | None = None
    first = True
    writer.start()
    try:
        while writer.error is None:
            buf = writer.free.get()
            view = memoryview(buf)
            try:
                n = download.readinto(view)
            except (OSError, http.client.HTTPException) as e:
                writer.free.put(buf)
                error = f"the download broke off after {got} bytes: {_reason(e)}"
                break
            if n == 0:
                writer.free.put(buf)
                break
            sha.update(view[:n])
            got += n
            if size is not None and got > size:
                writer.free.put(buf)
                error = f"pxed sent more than the {size} bytes BootInform says"
                break
            if first and strategy == "zstd":
                first = False
                declared = _declared_size(view[:n])
                if declared is not None and declared > limit:
                    writer.free.put(buf)
                    raise Failed(
                        f"the image ({declared} bytes, as its zstd frame says) is larger "
                        f"than {disk.path} ({limit} bytes); nothing written"
                    )
            writer.full.put((buf, n))
            if progress is not None:
                progress.done = got
        if error is None and writer.error is None and not download.complete:
            error = (
                f"the connection closed after {download.received} of "
                f"{download.length} bytes (download interrupted)"
            )
    finally:
        writer.full.put(None)
        writer.join()
    return got, sha.hexdigest(), error


def _declared_size(head: memoryview) -> int | None:
    probe = ZstdFrames()
    try:
        probe.feed(head[:64])
    except DecodeError:
        return None
    return probe.first_content_size


def _verdict(
    writer: _Writer,
    download_error: str | None,
    got: int,
    sha: str,
    want_sha: str,
    size: int | None,
    strategy: str,
    disk: Disk,
) -> None:
    """Failed unless the image is on the disk as pxed stores it.  The first
    failure in the pipe is the cause (those after it follow from it)."""
    error = writer.error
    if isinstance(error, disks.DiskFull):
        raise Failed(str(error))
    if isinstance(error, OSError):
        raise Failed(f"writing {disk.path} failed: {error.strerror or error}")
    if download_error is not None:
        raise Failed(f"download failed: {download_error}; {disk.path} holds a partial image")
    if size is not None and got != size:
        raise Failed(f"size mismatch: downloaded {got} bytes, expected {size}")
    if sha != want_sha:
        raise Failed(
            f"sha256 mismatch: downloaded {got} bytes with sha256 {sha}, expected {want_sha} "
            f"({size} bytes); {disk.path} holds damaged data"
        )
    if isinstance(error, DecodeError):
        raise Failed(
            f"{strategy} decompression failed (is the stored file really {strategy}?): {error}"
        )
    if error is not None:
        raise error


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
