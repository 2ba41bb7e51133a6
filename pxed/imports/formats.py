"""Disk image formats: told apart by their first bytes, converted to the raw
disk pxed stores.

xz is decompressed as a stream (python's lzma), hashed as it is written.
qcow2, VMDK and VHDX need random access, so Debian's ``qemu-img`` (package
qemu-utils) converts them from a file in staging into another file in
staging.  Such a file may name other files to read (a qcow2 backing file or
external data file, a VMDK's extents): the server would copy its own files
into the image, so an image that names any is refused, and ``qemu-img`` is
always told the format pxed recognised instead of probing.

Everything here blocks: call it on a worker thread.  *cancel* (set when the
job times out or pxed stops) ends the work between pieces and kills
``qemu-img``; whatever is unfinished is the caller's to remove."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import subprocess
import threading
from pathlib import Path

from pxed import sparse, tools
from pxed.sparse import Cancelled

RAW, XZ, QCOW2, VMDK, VHDX = "raw", "xz", "qcow2", "vmdk", "vhdx"
GZIP, ZSTD = "gzip", "zstd"
# Formats that need qemu-img.
VIRTUAL = (QCOW2, VMDK, VHDX)
# Formats converted to a raw disk.
CONVERTED = (XZ, *VIRTUAL)
# An image's own compressions (DiskCompressionStrategy): a file already in
# one is stored as it is, into an image that says so.
COMPRESSED = (GZIP, ZSTD)

_MAGIC = (
    (b"QFI\xfb", QCOW2),
    (b"KDMV", VMDK),
    (b"# Disk DescriptorFile", VMDK),
    (b"vhdxfile", VHDX),
    (b"\xfd7zXZ\x00", XZ),
    (b"\x1f\x8b\x08", GZIP),
    (b"\x28\xb5\x2f\xfd", ZSTD),
)
HEAD = 32

PIECE = 1024 * 1024
QEMU_IMG_INFO_TIMEOUT = 60.0


class ConversionError(Exception):
    """The image cannot be converted; the message says why, in one line."""


class TooLarge(ConversionError):
    """The disk inside is larger than the server takes."""


def detect(head: bytes) -> str:
    """The format whose magic *head* (the file's first bytes) starts with;
    raw otherwise."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return RAW


def detect_file(path: Path) -> str:
    with open(path, "rb") as f:
        return detect(f.read(HEAD))


def convert(
    fmt: str, src: Path, dst: Path, max_size: int, cancel: threading.Event
) -> tuple[int, str]:
    """*src* (in format *fmt*) written to *dst* as a raw disk of at most
    *max_size* bytes; returns its (size, sha256)."""
    if fmt == XZ:
        return _unxz(src, dst, max_size, cancel)
    if fmt in VIRTUAL:
        return _qemu_img(fmt, src, dst, max_size, cancel)
    raise ConversionError(f"{fmt} is not a format pxed converts")


def _unxz(src: Path, dst: Path, max_size: int, cancel: threading.Event) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        while True:
            if cancel.is_set():
                raise Cancelled()
            if decompressor.eof:
                # Concatenated .xz streams are one file to xz(1) too.
                rest = decompressor.unused_data
                if not rest:
                    rest = fin.read(PIECE)
                    if not rest:
                        break
                decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
                data = rest
            elif decompressor.needs_input:
                data = fin.read(PIECE)
                if not data:
                    raise ConversionError("the xz stream is cut off")
            else:
                data = b""
            try:
                # At most a piece out per call, whatever the ratio: a small
                # file that unpacks to terabytes never sits in memory.
                out = decompressor.decompress(data, max_length=PIECE)
            except lzma.LZMAError as e:
                raise ConversionError(f"the xz stream is damaged: {e}") from None
            size += len(out)
            if size > max_size:
                raise TooLarge(f"the xz stream unpacks to more than {max_size} bytes")
            digest.update(out)
            fout.write(out)
        fout.flush()
        os.fsync(fout.fileno())
    if size == 0:
        raise ConversionError("the xz stream holds no bytes")
    return size, digest.hexdigest()


def _qemu_img_path() -> str:
    try:
        return tools.find("qemu-img", package="qemu-utils")
    except tools.ToolNotFound as e:
        raise ConversionError(e.message) from None


def info(fmt: str, src: Path) -> dict:
    """What ``qemu-img info`` says of *src*, read as *fmt*."""
    qemu_img = _qemu_img_path()
    proc = subprocess.run(
        [qemu_img, "info", "-f", fmt, "--output=json", str(src)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=QEMU_IMG_INFO_TIMEOUT,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    if proc.returncode != 0:
        detail = tools.last_line(proc.stderr.decode(errors="replace")) or "no output"
        raise ConversionError(f"qemu-img cannot read it as {fmt}: {detail}")
    return json.loads(proc.stdout)


def check_self_contained(fmt: str, found: dict, src: Path) -> None:
    """Refuse an image that names files besides itself."""
    if found.get("backing-filename") or found.get("full-backing-filename"):
        raise ConversionError(f"the {fmt} image has a backing file; pxed takes whole images only")
    specific = (found.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise ConversionError(f"the {fmt} image keeps its data in another file")
    for extent in specific.get("extents") or ():
        name = extent.get("filename")
        if name and Path(name).resolve() != src.resolve():
            raise ConversionError(f"the {fmt} image has its data in other files")


def _qemu_img(
    fmt: str, src: Path, dst: Path, max_size: int, cancel: threading.Event
) -> tuple[int, str]:
    found = info(fmt, src)
    check_self_contained(fmt, found, src)
    virtual = int(found.get("virtual-size") or 0)
    if virtual <= 0:
        raise ConversionError(f"the {fmt} image holds an empty disk")
    if virtual > max_size:
        raise TooLarge(f"the {fmt} image holds a {virtual}-byte disk; the limit is {max_size}")
    cmd = [_qemu_img_path(), "convert", "-f", fmt, "-O", RAW, str(src), str(dst)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "LC_ALL": "C"},
    )
    try:
        while proc.poll() is None:
            if cancel.wait(0.2):
                raise Cancelled()
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    if proc.returncode != 0:
        detail = tools.last_line(err.decode(errors="replace")) or f"exit {proc.returncode}"
        raise ConversionError(f"qemu-img could not convert the {fmt} image: {detail}")
    # The holes qemu-img left are hashed without being read (pxed.sparse).
    return sparse.digest(dst, cancel)
