"""Image files on disk.

Layout under the data dir: ``images/<uuid>/<file>`` for committed versions,
where *file* is the name the version's row records (``<version>.img``, or
``<version>-<random>.img`` once the version has been replaced), and
``images/.staging/`` for files being written.  Staging is on the same
filesystem, so putting a file in place is an fsync and a link(2) to a name
nothing has: a version file is either complete or absent, and no bytes a
row names are ever overwritten.  A replaced file is removed only after the
row naming its successor is committed.  Everything here blocks; call it
through the IO pool."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from pxed import sparse, tools
from pxed.errors import ApiError, InsufficientStorage

READ_SIZE = 1024 * 1024
# A version's chunk index, beside its file: ``<file>.idx`` (pxed.chunkstore).
INDEX_SUFFIX = ".idx"


def index_of(path: Path) -> Path:
    """Where the chunk index of the version file at *path* is."""
    return path.with_name(path.name + INDEX_SUFFIX)


class BlankTooLarge(ApiError):
    """A blank disk larger than the filesystem can hold as one file."""

    status = 400


class Staged(NamedTuple):
    """A file received or made completely, in staging: where it is, how
    big, its sha256."""

    path: Path
    size: int
    sha256: str


# Staging files another server left (it stopped and was never started
# again under its name) are removed after this long without a write.
STALE_STAGING = 24 * 3600.0
# Between a server's name and the rest of its staging files' names.
OWNER_MARK = "~"


class StagingDir:
    """A directory of files being written, on the filesystem they are put
    in place on.  Several servers may share it: each tags its files with
    its name and clears only its own at start (and others' long stale)."""

    def __init__(self, path: Path, server: str = "") -> None:
        self.path = Path(path)
        self._tag = re.sub(r"[^A-Za-z0-9_.-]", "_", server)

    def prepare(self) -> int:
        """Create the directory and remove what an earlier run of this
        server left (work cut off by a crash), and what other servers left
        long ago.  Returns how many were removed."""
        self.path.mkdir(parents=True, exist_ok=True)
        removed = 0
        for leftover in self.path.iterdir():
            if not self._left_over(leftover):
                continue
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def _left_over(self, entry: Path) -> bool:
        owner, marked, _ = entry.name.partition(OWNER_MARK)
        if not marked or owner == self._tag:
            return True
        try:
            return time.time() - entry.lstat().st_mtime > STALE_STAGING
        except FileNotFoundError:
            return False

    def _prefix(self, prefix: str) -> str:
        return f"{self._tag}{OWNER_MARK}{prefix}" if self._tag else prefix

    def new(self, prefix: str = "upload-") -> tuple[Path, int]:
        """A new file: its path and an open descriptor."""
        fd, name = tempfile.mkstemp(dir=self.path, prefix=self._prefix(prefix))
        return Path(name), fd

    @contextlib.contextmanager
    def directory(self, prefix: str = "work-") -> Iterator[Path]:
        """A new directory, removed with whatever is left in it."""
        self.path.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=self.path, prefix=self._prefix(prefix)))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


class Storage:
    def __init__(self, data_dir: Path, server: str = "") -> None:
        """*server*: the name of the server writing here (config
        server_name), put in its staging files' names."""
        self.images = Path(data_dir) / "images"
        self._staging = StagingDir(self.images / ".staging", server)
        self.staging = self._staging.path

    def prepare(self) -> int:
        """Create the directories and empty this server's staging
        (StagingDir.prepare).  Returns how many were removed."""
        return self._staging.prepare()

    def path(self, image_uuid: str, file: str) -> Path:
        """Where a version's file is: *file* is the name its row records
        (``Version.file``), not derived from the number, since a replaced
        version lives under a new name."""
        if not isinstance(file, str) or "/" in file or file in ("", ".", ".."):
            raise TypeError(f"a version's file name, not {file!r}")
        return self.images / image_uuid / file

    def new_staging(self, prefix: str = "upload-") -> tuple[Path, int]:
        return self._staging.new(prefix)

    def place(self, staged: Path, image_uuid: str, first: int) -> tuple[int, str]:
        """Durably put a fully written staging file in place as a new
        version, numbered *first* or the next number free on disk (another
        upload of the same image may have taken *first* meanwhile: names are
        claimed with link(2), which never overwrites, so two never share
        one).  Returns the number and the file name to record."""
        directory = self._directory(staged, image_uuid)
        number = first
        while not _link_new(staged, directory / version_file(number)):
            number += 1
        fsync_dir(directory)
        staged.unlink(missing_ok=True)
        return number, version_file(number)

    def place_beside(self, staged: Path, image_uuid: str, version: int) -> str:
        """Durably put a fully written staging file in place under a new
        name for *version*, which already has a file: the replacement of a
        version.  The old file is not touched; it goes (remove_file) only
        once the row names the new one.  Returns the new name."""
        directory = self._directory(staged, image_uuid)
        while not _link_new(staged, directory / (name := replacement_file(version))):
            pass
        fsync_dir(directory)
        staged.unlink(missing_ok=True)
        return name

    def _directory(self, staged: Path, image_uuid: str) -> Path:
        _fsync_file(staged)
        directory = self.images / image_uuid
        directory.mkdir(exist_ok=True)
        return directory

    def remove_file(self, image_uuid: str, file: str) -> None:
        """A version's file that no row names any more (replaced), with the
        Dockerfile kept beside it if a build made it."""
        path = self.path(image_uuid, file)
        index_of(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        path.with_suffix(".Dockerfile").unlink(missing_ok=True)

    def drop_whole(self, image_uuid: str, file: str) -> None:
        """A version's whole file, once its chunk index is in place: the
        version is served from its chunks from now on."""
        path = self.path(image_uuid, file)
        if not index_of(path).is_file():
            raise FileNotFoundError(f"{path} has no chunk index; keeping it")
        path.unlink(missing_ok=True)

    def remove_version(self, image_uuid: str, file: str) -> None:
        """A version's file put in place whose row could not be recorded."""
        self.remove_file(image_uuid, file)
        # The image itself may be gone (deleted while this version was
        # being put in place): leave no empty directory for it.
        with contextlib.suppress(OSError):
            (self.images / image_uuid).rmdir()

    def remove_image(self, image_uuid: str) -> None:
        shutil.rmtree(self.images / image_uuid, ignore_errors=True)

    def discard(self, staged: Path) -> None:
        staged.unlink(missing_ok=True)

    def make_blank(
        self,
        size: int,
        filesystem: str,
        compression: str,
        cancel: threading.Event | None = None,
    ) -> Staged:
        """A new disk of *size* bytes (sparse), formatted with *filesystem*,
        compressed as the image says, in staging.  Returns (path, size, sha256).

        Only the filesystem's metadata is read and compressed; the holes are
        written as ready-made compressed zeros (pxed.sparse), so a compressed
        blank costs about 1/1000 (gzip) or 1/40000 (zstd) of its size in time
        and space; an uncompressed one stays sparse, and its sha256 still
        sees every byte.  Setting *cancel* stops the work between pieces
        (sparse.Cancelled) and leaves nothing in staging."""
        raw, fd = self.new_staging("blank-")
        packed: Path | None = None
        try:
            os.ftruncate(fd, size)
            os.close(fd)
            fd = -1
            _mkfs(raw, filesystem)
            if compression == "none":
                return Staged(raw, *file_digest(raw, cancel))
            packed, pfd = self.new_staging("blank-packed-")
            os.close(pfd)
            written, sha256 = compress(raw, packed, compression, cancel)
            raw.unlink()
            return Staged(packed, written, sha256)
        except BaseException as e:
            raw.unlink(missing_ok=True)
            if packed is not None:
                packed.unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise InsufficientStorage("not enough space for the image") from None
            if isinstance(e, OSError) and e.errno == errno.EFBIG:
                raise BlankTooLarge(
                    f"Size: {size} bytes is more than the data dir's filesystem allows in one file"
                ) from None
            raise
        finally:
            if fd >= 0:
                os.close(fd)


def version_file(version: int) -> str:
    """The name a version's first file gets."""
    return f"{version}.img"


def replacement_file(version: int) -> str:
    """A fresh name for a version's replacement file."""
    return f"{version}-{secrets.token_hex(6)}.img"


def _link_new(staged: Path, final: Path) -> bool:
    """Give *staged* the name *final* unless that name exists (link(2) never
    overwrites, unlike rename(2)).  False if it exists."""
    try:
        os.link(staged, final)
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # A filesystem without hard links: claim the name with O_EXCL, then
        # rename over that empty claim (never over anyone's bytes).
        try:
            os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        os.replace(staged, final)
    return True


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
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


def compress(
    src: Path, dst: Path, compression: str, cancel: threading.Event | None = None
) -> tuple[int, str]:
    """*src* compressed into *dst*, its holes without being read (pxed.sparse);
    returns *dst*'s (size, sha256), hashed as it was written."""
    return sparse.compress(src, dst, compression, cancel)


def file_digest(path: Path, cancel: threading.Event | None = None) -> tuple[int, str]:
    """(size, sha256) of a file, its holes hashed without being read
    (pxed.sparse)."""
    return sparse.digest(path, cancel)
