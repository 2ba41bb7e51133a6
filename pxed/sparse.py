"""Compressing a sparse file without reading (or compressing) its holes.

A blank disk is a sparse file with a few MiB of filesystem metadata in it;
compressing it byte by byte costs time in proportion to its size (hours
for a 16 TiB gzip disk).  Here the file's data extents (found with
SEEK_DATA/SEEK_HOLE) are compressed as usual and each hole is written as
ready-made compressed runs of zeros, computed once per size.  Every extent
and run is a gzip member or zstd frame of its own; both formats define a
file of several as the concatenation of their contents (gzip -d, zstd -d,
Go's gzip.Reader, Python's gzip module read them whole).

What a hole still costs is the size of its compressed zeros: about 1/1000
of the hole for gzip (deflate cannot do better), 1/40000 for zstd.  The
work checks *cancel* between pieces, so a stopping server does not wait
for it."""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import zstandard

PIECE = 1024 * 1024
# The largest run of zeros compressed once and repeated; smaller runs are
# the powers of two below it.
ZERO_RUN = 64 * 1024 * 1024
SMALLEST_RUN = 4096
GZIP_LEVEL = 1
ZSTD_LEVEL = 3


class Cancelled(Exception):
    """The work was stopped (the server is shutting down)."""


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("stopped: the server is shutting down")


def extents(fd: int, size: int) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, is_data) of the file's data and holes, in order."""
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole from here to the end
                data = size
            elif e.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # no hole support
                yield pos, size - pos, True
                return
            else:
                raise
        data = min(data, size)
        if data > pos:
            yield pos, data - pos, False
        if data >= size:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        yield data, hole - data, True
        pos = hole


def _compressor(compression: str):
    """A fresh compressor making one whole gzip member or zstd frame."""
    if compression == "gzip":
        # wbits 31: a gzip wrapper (mtime 0, so the same input gives the
        # same bytes).
        return zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
    raise ValueError(compression)


@functools.lru_cache(maxsize=64)
def _zeros(compression: str, length: int) -> bytes:
    """*length* zero bytes as one member/frame (computed once per size)."""
    c = _compressor(compression)
    out = []
    chunk = bytes(min(length, PIECE))
    left = length
    while left:
        n = min(left, PIECE)
        out.append(c.compress(chunk[:n]))
        left -= n
    out.append(c.flush())
    return b"".join(out)


def _zero_runs(compression: str, length: int, cancel: threading.Event | None) -> Iterator[bytes]:
    """*length* zero bytes as ready-made compressed runs."""
    while length >= ZERO_RUN:
        _check(cancel)
        yield _zeros(compression, ZERO_RUN)
        length -= ZERO_RUN
    run = ZERO_RUN // 2
    while length >= SMALLEST_RUN:
        if length >= run:
            yield _zeros(compression, run)
            length -= run
        run //= 2
    if length:
        yield _zeros(compression, length)


def compress(
    src: Path, dst: Path, compression: str, cancel: threading.Event | None = None
) -> tuple[int, str]:
    """Compress *src* into *dst* (created) as *compression* says; returns
    the (size, sha256) of what was written."""
    h = hashlib.sha256()
    written = 0
    with open(src, "rb", buffering=0) as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size

        def put(data: bytes) -> None:
            nonlocal written
            if data:
                fout.write(data)
                h.update(data)
                written += len(data)

        for offset, length, is_data in extents(fin.fileno(), size):
            if not is_data:
                for run in _zero_runs(compression, length, cancel):
                    put(run)
                continue
            c = _compressor(compression)
            fin.seek(offset)
            left = length
            while left:
                _check(cancel)
                piece = fin.read(min(left, PIECE))
                if not piece:  # the file shrank under us
                    raise OSError(errno.EIO, f"{src}: shorter than its extents")
                put(c.compress(piece))
                left -= len(piece)
            put(c.flush())
        if size == 0:  # an empty file is still one (empty) member
            put(_zeros(compression, 0))
    return written, h.hexdigest()


def digest(path: Path, cancel: threading.Event | None = None) -> tuple[int, str]:
    """(size, sha256) of a file whose holes are hashed from a buffer of
    zeros instead of being read.  SHA-256 still has to see every byte: this
    is bounded by the size, not by the data, and checks *cancel* as it goes."""
    h = hashlib.sha256()
    zeros = bytes(PIECE)
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        for offset, length, is_data in extents(f.fileno(), size):
            if is_data:
                f.seek(offset)
            left = length
            while left:
                _check(cancel)
                n = min(left, PIECE)
                piece = f.read(n) if is_data else zeros[:n] if n < PIECE else zeros
                if not piece:
                    raise OSError(errno.EIO, f"{path}: shorter than its extents")
                h.update(piece)
                left -= len(piece)
    return size, h.hexdigest()
