"""A version's chunk index: the content-defined chunks its bytes are cut
into, in order, each named by its sha256.  pxed writes one beside every
version (pxed.chunkstore) and serves it to the management OS, which needs
the same format to compare a disk with it; so it lives here, with no import
the agent lacks (the chunker, PyPI's ``fastcdc``, is imported only where a
file is cut).

The format is binary and small (36 bytes per chunk, about 0.06 % of the
image at 64 KiB chunks): a head of ``HEAD`` (magic, format version, the
three chunk bounds the cut used, the whole size and sha256, the number of
chunks), then per chunk its length (little-endian u32) and sha256.  A
parser trusts nothing: lengths must add up to the size and stay within the
bounds, and the count must match the bytes that follow."""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import BinaryIO

MAGIC = b"PXEDIDX1"
FORMAT = 1
HEAD = struct.Struct("<8sIIIIQ32sQ")
ENTRY = struct.Struct("<I32s")

# The chunk sizes a setting may ask for: FastCDC's own limits (its minimum
# chunk is 64 bytes, its maximum 1 GiB) are far wider than what makes sense
# for disks, where a chunk smaller than 16 KiB costs more in index and
# requests than it saves, and one over 16 MiB dedups little.
MIN_AVERAGE = 16 * 1024
MAX_AVERAGE = 16 * 1024 * 1024


class IndexError_(ValueError):
    """Bytes that are not a well-formed chunk index."""


def bounds(average: int) -> tuple[int, int, int]:
    """(min, average, max) chunk sizes for an average: a quarter and four
    times, as casync and desync use."""
    if not MIN_AVERAGE <= average <= MAX_AVERAGE:
        raise ValueError(f"average chunk size {average}: must be {MIN_AVERAGE}..{MAX_AVERAGE}")
    return average // 4, average, average * 4


@dataclass(frozen=True)
class Index:
    size: int
    sha256: str
    min: int
    avg: int
    max: int
    lengths: tuple[int, ...]
    digests: tuple[bytes, ...]

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Where each chunk starts."""
        return (0, *accumulate(self.lengths[:-1])) if self.lengths else ()

    def unique(self) -> dict[bytes, int]:
        """Each distinct chunk's digest and length."""
        return dict(zip(self.digests, self.lengths, strict=True))

    def unique_bytes(self) -> int:
        return sum(self.unique().values())

    def to_bytes(self) -> bytes:
        head = HEAD.pack(
            MAGIC,
            FORMAT,
            self.min,
            self.avg,
            self.max,
            self.size,
            bytes.fromhex(self.sha256),
            len(self.lengths),
        )
        return head + b"".join(
            ENTRY.pack(n, d) for n, d in zip(self.lengths, self.digests, strict=True)
        )


def parse(data: bytes) -> Index:
    if len(data) < HEAD.size:
        raise IndexError_("too short for a chunk index")
    magic, fmt, lo, avg, hi, size, whole, count = HEAD.unpack_from(data)
    if magic != MAGIC or fmt != FORMAT:
        raise IndexError_("not a pxed chunk index (format 1)")
    if not 0 < lo <= avg <= hi:
        raise IndexError_("chunk bounds out of order")
    if len(data) != HEAD.size + count * ENTRY.size:
        raise IndexError_(f"{count} chunks do not fit {len(data)} bytes")
    lengths = []
    digests = []
    for n, d in ENTRY.iter_unpack(memoryview(data)[HEAD.size :]):
        if not 0 < n <= hi:
            raise IndexError_(f"a chunk of {n} bytes is outside 1..{hi}")
        lengths.append(n)
        digests.append(d)
    if sum(lengths) != size:
        raise IndexError_(f"the chunks add up to {sum(lengths)} bytes, not {size}")
    return Index(size, whole.hex(), lo, avg, hi, tuple(lengths), tuple(digests))


def read(path: Path) -> Index:
    return parse(Path(path).read_bytes())


def cut(data, average: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of each content-defined chunk of *data* (bytes, a
    memoryview or an mmap), by FastCDC's compiled chunker."""
    from fastcdc.fastcdc_cy import fastcdc_cy  # the server's; see the module doc

    lo, avg, hi = bounds(average)
    if len(data) == 0:
        return
    for chunk in fastcdc_cy(data, lo, avg, hi, False, None):
        yield chunk.offset, chunk.length


def walk(data, average: int, cancel=None) -> Iterator[tuple[memoryview, bytes]]:
    """Each chunk of *data* (an mmap, say) as a view of its bytes and its
    sha256 digest.  A view is valid until the next one is asked for.
    *cancel* (a threading.Event) stops it between chunks with Cancelled."""
    from pxed.sparse import Cancelled

    view = memoryview(data)
    try:
        for offset, length in cut(data, average):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            piece = view[offset : offset + length]
            try:
                yield piece, hashlib.sha256(piece).digest()
            finally:
                piece.release()
    finally:
        view.release()


def index_file(f: BinaryIO, average: int, cancel=None) -> Index:
    """Cut and hash a whole file, mapped rather than read into memory."""
    lo, avg, hi = bounds(average)
    whole = hashlib.sha256()
    lengths: list[int] = []
    digests: list[bytes] = []
    size = os.fstat(f.fileno()).st_size
    if size:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for piece, digest in walk(m, average, cancel):
                whole.update(piece)
                lengths.append(len(piece))
                digests.append(digest)
    return Index(size, whole.hexdigest(), lo, avg, hi, tuple(lengths), tuple(digests))
