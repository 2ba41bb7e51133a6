"""The compressions an image is stored in (its DiskCompressionStrategy):
decoders that write what they decompress to a sink as it comes, and
encoders for captures.  Memory stays bounded whatever the ratio (a zstd
block of zeros is a few bytes for 128 KiB), and a stream that stops early
is an error, not a shorter image: zlib says when a gzip member is complete,
and zstd's frames are followed header by header (python-zstandard's
streaming decoders end quietly on a truncated frame)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any, Protocol

STRATEGIES = ("none", "gzip", "zstd")
# Output handed to the sink at a time: large writes, bounded memory.
OUT_CHUNK = 1 << 20
_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MAGIC = 0x184D2A50  # 0x184D2A50..0x184D2A5F


class DecodeError(Exception):
    """The stored bytes are not (all) what their compression says."""


class UnknownCompression(ValueError):
    pass


class Sink(Protocol):
    def write(self, data: bytes | memoryview) -> int: ...


def check(strategy: str) -> str:
    name = (strategy or "none").lower()
    if name in ("", "null"):
        name = "none"
    if name not in STRATEGIES:
        raise UnknownCompression(
            f"unknown DiskCompressionStrategy {strategy!r} "
            f"(this agent knows {', '.join(STRATEGIES)})"
        )
    return name


def zstandard_module() -> Any:
    """python-zstandard, imported only when an image asks for zstd."""
    try:
        import zstandard
    except ImportError as e:
        raise DecodeError(
            f"zstd needs the Python module zstandard (Debian: python3-zstandard), "
            f"which this management OS lacks: {e}"
        ) from None
    return zstandard


def decode(strategy: str, chunks: Iterator[memoryview], sink: Sink) -> None:
    """Decompress the stream *chunks* make up into *sink*; DecodeError if
    it is not what *strategy* says or ends early."""
    name = check(strategy)
    if name == "zstd":
        _zstd(chunks, sink)
        return
    if name == "gzip":
        decoder = GzipDecoder(sink)
        for chunk in chunks:
            decoder.feed(chunk)
        decoder.finish()
        return
    for chunk in chunks:
        sink.write(chunk)


class GzipDecoder:
    """gzip members one after another (as ``cat a.gz b.gz`` makes), each
    complete."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._d = zlib.decompressobj(wbits=31)
        self._members = 0
        self._fresh = True  # no byte of the current member seen yet

    def feed(self, data: memoryview | bytes) -> None:
        try:
            while len(data):
                self._fresh = False
                out = self._d.decompress(data, OUT_CHUNK)
                if out:
                    self._sink.write(out)
                if self._d.eof:
                    self._members += 1
                    data = self._d.unused_data
                    self._d = zlib.decompressobj(wbits=31)
                    self._fresh = True
                else:
                    data = self._d.unconsumed_tail
        except zlib.error as e:
            raise DecodeError(f"not valid gzip data: {e}") from None

    def finish(self) -> None:
        if not self._fresh or self._members == 0:
            raise DecodeError("the gzip stream ends in the middle of a member (truncated)")


class ZstdFrames:
    """Follows a zstd stream's frames by their headers alone (RFC 8878:
    frame header, block headers with their sizes, optional checksum;
    skippable frames), to tell a complete stream from a truncated one.
    It costs a few operations per block of up to 128 KiB."""

    def __init__(self) -> None:
        self.frames = 0
        self.offset = 0
        # The first frame's declared content size, when it has one.
        self.first_content_size: int | None = None
        self._state = "magic"
        self._want = 4
        self._head = bytearray()
        self._skip = 0
        self._checksum = False
        self._fcs_size = 0

    def feed(self, data: memoryview | bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                k = min(self._skip, n - i)
                self._skip -= k
                i += k
                continue
            k = min(self._want - len(self._head), n - i)
            self._head += data[i : i + k]
            i += k
            if len(self._head) == self._want:
                head = bytes(self._head)
                self._head.clear()
                self._step(head, self.offset + i)
        self.offset += n

    @property
    def complete(self) -> bool:
        return self._state == "magic" and not self._head and not self._skip and self.frames > 0

    def _step(self, head: bytes, at: int) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(head, "little")
            if magic == _ZSTD_MAGIC:
                self._state, self._want = "descriptor", 1
            elif magic & 0xFFFFFFF0 == _SKIPPABLE_MAGIC:
                self._state, self._want = "skippable", 4
            else:
                raise DecodeError(f"not zstd data: no frame starts at byte {at - 4}")
        elif state == "skippable":
            self._skip = int.from_bytes(head, "little")
            self._state, self._want = "magic", 4
        elif state == "descriptor":
            fhd = head[0]
            if fhd & 0x08:
                raise DecodeError(f"not zstd data: reserved bit set in the frame at byte {at - 5}")
            single = bool(fhd & 0x20)
            self._checksum = bool(fhd & 0x04)
            self._fcs_size = (1 if single else 0, 2, 4, 8)[fhd >> 6]
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + self._fcs_size
            if rest:
                self._state, self._want = "header", rest
            else:
                self._state, self._want = "block", 3
        elif state == "header":
            if self._fcs_size and self.frames == 0 and self.first_content_size is None:
                size = int.from_bytes(head[-self._fcs_size :], "little")
                self.first_content_size = size + 256 if self._fcs_size == 2 else size
            self._state, self._want = "block", 3
        elif state == "block":
            header = int.from_bytes(head, "little")
            kind = (header >> 1) & 3
            if kind == 3:
                raise DecodeError(f"not zstd data: reserved block type at byte {at - 3}")
            self._skip = 1 if kind == 1 else header >> 3
            if header & 1:  # the frame's last block
                if self._checksum:
                    self._state, self._want = "checksum", 4
                else:
                    self.frames += 1
                    self._state, self._want = "magic", 4
        elif state == "checksum":
            self.frames += 1
            self._state, self._want = "magic", 4


def _zstd(chunks: Iterator[memoryview], sink: Sink) -> None:
    """zstd frames one after another, checked complete by ZstdFrames.
    python-zstandard's stream reader pulls the chunks and decompresses
    into one reused buffer (no copy of the output, no allocation), without
    holding the GIL while it does."""
    zstandard = zstandard_module()
    frames = ZstdFrames()

    class Source:
        def read(self, size: int = -1) -> memoryview | bytes:
            # Called again once the chunk before is used up: its buffer
            # may then be reused (the iterator's business).
            chunk = next(chunks, None)
            if chunk is None:
                return b""
            frames.feed(chunk)
            return chunk

    reader = zstandard.ZstdDecompressor().stream_reader(
        Source(), read_size=OUT_CHUNK, read_across_frames=True, closefd=False
    )
    out = memoryview(bytearray(OUT_CHUNK))
    try:
        while n := reader.readinto(out):
            sink.write(out[:n])
    except zstandard.ZstdError as e:
        raise DecodeError(f"not valid zstd data: {e}") from None
    if not frames.complete:
        raise DecodeError("the zstd stream ends in the middle of a frame (truncated)")


class Encoder(Protocol):
    def feed(self, data: memoryview) -> bytes: ...
    def finish(self) -> bytes: ...


def encoder(strategy: str, size: int | None = None) -> Encoder | None:
    """An encoder for *strategy*; None for none (the bytes go as read)."""
    name = check(strategy)
    if name == "gzip":
        return _ZlibEncoder(zlib.compressobj(1, zlib.DEFLATED, 31))
    if name == "zstd":
        zstandard = zstandard_module()
        # All cores: zstd's own worker threads; level 3 is zstd's default.
        cctx = zstandard.ZstdCompressor(level=3, threads=-1)
        return _ZstdEncoder(cctx.compressobj(size=size if size is not None else -1))
    return None


class _ZlibEncoder:
    # Level 1: fast, and disks are mostly zeros or compressed data anyway.
    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def feed(self, data: memoryview) -> bytes:
        return self._obj.compress(data)

    def finish(self) -> bytes:
        return self._obj.flush()


class _ZstdEncoder(_ZlibEncoder):
    pass
