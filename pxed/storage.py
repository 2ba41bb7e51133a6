"""Image files on disk.

Layout under the data dir: ``images/<uuid>/<version>.img`` for committed
versions, ``images/.staging/`` for files being written.  Staging is on the
same filesystem, so a commit is an fsync and a rename: a version file is
either complete or absent.  Everything here blocks; call it through the IO
pool."""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import zstandard

from pxed import tools
from pxed.errors import ApiError

READ_SIZE = 1024 * 1024


class InsufficientStorage(ApiError):
    status = 507


class Staged(NamedTuple):
    """A file received or made completely, in staging: where it is, how
    big, its sha256."""

    path: Path
    size: int
    sha256: str


class Storage:
    def __init__(self, data_dir: Path) -> None:
        self.images = Path(data_dir) / "images"
        self.staging = self.images / ".staging"

    def prepare(self) -> int:
        """Create the directories and remove what an earlier run left in
        staging (uploads cut off by a crash).  Returns how many were removed."""
        self.staging.mkdir(parents=True, exist_ok=True)
        removed = 0
        for leftover in self.staging.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def path(self, image_uuid: str, version: int) -> Path:
        return self.images / image_uuid / f"{version}.img"

    def new_staging(self, prefix: str = "upload-") -> tuple[Path, int]:
        fd, name = tempfile.mkstemp(dir=self.staging, prefix=prefix)
        return Path(name), fd

    def place(self, staged: Path, image_uuid: str, first: int) -> int:
        """Durably move a fully written staging file into place as a new
        version, numbered *first* or the next number free on disk (another
        upload of the same image may have taken *first* meanwhile: the name
        is claimed with O_EXCL, so two never share one).  Returns the number."""
        _fsync_file(staged)
        directory = self.images / image_uuid
        directory.mkdir(exist_ok=True)
        number = first
        while True:
            try:
                os.close(os.open(self.path(image_uuid, number), os.O_CREAT | os.O_EXCL, 0o644))
                break
            except FileExistsError:
                number += 1
        os.replace(staged, self.path(image_uuid, number))
        _fsync_dir(directory)
        return number

    def replace(self, staged: Path, image_uuid: str, version: int) -> None:
        """Durably move a fully written staging file over an existing version."""
        _fsync_file(staged)
        final = self.path(image_uuid, version)
        final.parent.mkdir(exist_ok=True)
        os.replace(staged, final)
        _fsync_dir(final.parent)

    def remove_version(self, image_uuid: str, version: int) -> None:
        path = self.path(image_uuid, version)
        path.unlink(missing_ok=True)
        # The image itself may be gone (deleted while this version was
        # being put in place): leave no empty directory for it.
        with contextlib.suppress(OSError):
            path.parent.rmdir()

    def remove_image(self, image_uuid: str) -> None:
        shutil.rmtree(self.images / image_uuid, ignore_errors=True)

    def discard(self, staged: Path) -> None:
        staged.unlink(missing_ok=True)

    def make_blank(self, size: int, filesystem: str, compression: str) -> Staged:
        """A new disk of *size* bytes (sparse), formatted with *filesystem*,
        compressed as the image says, in staging.  Returns (path, size, sha256)."""
        raw, fd = self.new_staging("blank-")
        try:
            os.ftruncate(fd, size)
            os.close(fd)
            fd = -1
            _mkfs(raw, filesystem)
            if compression == "none":
                return Staged(raw, *file_digest(raw))
            packed, pfd = self.new_staging("blank-packed-")
            os.close(pfd)
            try:
                compress(raw, packed, compression)
            except BaseException:
                packed.unlink(missing_ok=True)
                raise
            raw.unlink()
            return Staged(packed, *file_digest(packed))
        except OSError as e:
            raw.unlink(missing_ok=True)
            if e.errno == errno.ENOSPC:
                raise InsufficientStorage("not enough space for the image") from None
            raise
        except BaseException:
            raw.unlink(missing_ok=True)
            raise
        finally:
            if fd >= 0:
                os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FormatError(Exception):
    """mkfs refused (the size is too small for the filesystem, say)."""


MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F"],
    "fat32": ["mkfs.fat", "-F", "32"],
}


# FAT32 needs at least 65525 clusters; mkfs.fat only warns below that and
# writes a volume that firmware and kernels may refuse.
FAT32_MIN = 33 * 1024 * 1024
MKFS_TIMEOUT = 600  # seconds; a sparse disk of any size formats in far less


def _mkfs(path: Path, filesystem: str) -> None:
    if filesystem == "raw":
        return
    if filesystem == "fat32" and path.stat().st_size < FAT32_MIN:
        raise FormatError("fat32 needs a size of at least 33 MiB")
    program, *args = MKFS[filesystem]
    try:
        tools.run([tools.find(program), *args, str(path)], timeout=MKFS_TIMEOUT)
    except tools.ToolNotFound:
        raise FormatError(f"{program} is not installed on the server") from None
    except tools.ToolFailed as e:
        # The client's to fix (a size the filesystem cannot use): its words.
        raise FormatError(f"{program} failed: {e.detail or e.returncode}") from None


def compress(src: Path, dst: Path, compression: str) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        if compression == "gzip":
            with gzip.GzipFile(fileobj=fout, mode="wb", compresslevel=1, mtime=0) as gz:
                shutil.copyfileobj(fin, gz, READ_SIZE)
        elif compression == "zstd":
            zstandard.ZstdCompressor(level=3).copy_stream(fin, fout, read_size=READ_SIZE)
        else:
            raise ValueError(compression)


def file_digest(path: Path) -> tuple[int, str]:
    """(size, sha256) of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(READ_SIZE):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()
