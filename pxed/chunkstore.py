"""Chunks on disk: every version's bytes, cut into content-defined chunks,
each stored once, compressed, named by its sha256, shared by every version
of every image.

Layout under the data dir: ``chunks/<2 hex>/<64 hex>``, one zstd frame per
chunk; ``chunks/.staging/`` for chunks being written; ``chunks/gc.lock``.
A version's index (pxed.agent.chunkindex) is ``images/<uuid>/<file>.idx``,
beside the version's file, which the store may then remove (the version is
served from its chunks).

Order, for crash safety: new chunks are written into staging, flushed with
one syncfs(2), and only then linked under their names, so a chunk under its
name is always complete; the index is written, fsynced and linked after
every chunk it names is in place; the database records it after that.  A
crash leaves staging files (cleared at start), chunks no index names
(collected), or an index no row records (the version is indexed again).

Collection and indexing exclude each other through ``gc.lock``, an
flock(2) every server on the data dir takes: indexing holds it shared while
it writes chunks and places an index; collection holds it exclusively
while it marks what every index names and removes the rest.  So a chunk an
index is about to name is never removed, with two servers on one data dir
as with one.  Everything here blocks: call it through the IO pool."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

from pxed.agent import chunkindex
from pxed.agent.chunkindex import Index
from pxed.errors import InsufficientStorage
from pxed.storage import INDEX_SUFFIX, StagingDir, fsync_dir, index_of

# zstd level 1: about 500 MB/s per core here, so compressing never limits
# indexing more than hashing does; disks' zeros and text still shrink.
LEVEL = 1


class ChunkMissing(Exception):
    """A chunk an index names is not in the store, or its bytes do not
    match its name."""


@dataclass(frozen=True)
class Indexed:
    """What indexing a version found."""

    size: int
    chunks: int
    # Bytes of the version's distinct chunks.
    unique_bytes: int
    # Bytes of its chunks that its parent version has too.
    shared_bytes: int
    new_chunks: int
    # New chunks' bytes before and after compression.
    new_bytes: int
    stored_bytes: int


@dataclass(frozen=True)
class Collected:
    kept: int
    removed: int
    removed_bytes: int


class ChunkStore:
    def __init__(self, data_dir: Path, average: int = 65536, server: str = "") -> None:
        self.root = Path(data_dir) / "chunks"
        self.images = Path(data_dir) / "images"
        self.average = average
        chunkindex.bounds(average)  # refuses a bad setting now
        self.staging = StagingDir(self.root / ".staging", server)

    def prepare(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.staging.prepare()

    def chunk_path(self, digest: bytes) -> Path:
        name = digest.hex()
        return self.root / name[:2] / name

    def index_path(self, image_uuid: str, file: str) -> Path:
        return index_of(self.images / image_uuid / file)

    def has_index(self, image_uuid: str, file: str) -> bool:
        return self.index_path(image_uuid, file).is_file()

    def index(self, image_uuid: str, file: str) -> Index:
        return chunkindex.read(self.index_path(image_uuid, file))

    # -- writing --------------------------------------------------------------

    def index_version(
        self,
        image_uuid: str,
        file: str,
        sha256: str,
        parent_file: str | None = None,
        cancel=None,
    ) -> Indexed:
        """Cut the version file ``images/<uuid>/<file>`` into chunks, store
        the ones the store lacks, and place its index.  *sha256* is the
        version's, recorded when its bytes were received."""
        source = self.images / image_uuid / file
        try:
            with self._lock(fcntl.LOCK_SH), self.staging.directory() as staged:
                return self._index(source, image_uuid, file, sha256, parent_file, staged, cancel)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise InsufficientStorage("not enough space for the version's chunks") from None
            raise

    def _index(self, source, image_uuid, file, sha256, parent_file, staged: Path, cancel):
        lengths: list[int] = []
        digests: list[bytes] = []
        new: dict[bytes, Path] = {}
        new_bytes = stored = 0
        compressor = zstandard.ZstdCompressor(level=LEVEL)
        with open(source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                    for piece, digest in chunkindex.walk(m, self.average, cancel):
                        lengths.append(len(piece))
                        digests.append(digest)
                        if digest in new or self.chunk_path(digest).exists():
                            continue
                        packed = compressor.compress(piece)
                        path = staged / digest.hex()
                        with open(path, "wb") as out:
                            out.write(packed)
                        new[digest] = path
                        new_bytes += len(piece)
                        stored += len(packed)
        lo, avg, hi = chunkindex.bounds(self.average)
        index = Index(size, sha256, lo, avg, hi, tuple(lengths), tuple(digests))
        if new:
            # One flush for every new chunk instead of an fsync each, before
            # any of them gets the name that says it is complete.
            syncfs(staged)
            for digest, path in new.items():
                final = self.chunk_path(digest)
                final.parent.mkdir(exist_ok=True)
                with contextlib.suppress(FileExistsError):  # another server's, as good
                    os.link(path, final)
            syncfs(self.root)
        self._place_index(index, image_uuid, file, staged)
        parent = self._parent_digests(image_uuid, parent_file)
        unique = index.unique()
        return Indexed(
            size=size,
            chunks=len(index),
            unique_bytes=sum(unique.values()),
            shared_bytes=sum(n for d, n in unique.items() if d in parent),
            new_chunks=len(new),
            new_bytes=new_bytes,
            stored_bytes=stored,
        )

    def _place_index(self, index: Index, image_uuid: str, file: str, staged: Path) -> None:
        tmp = staged / "index"
        with open(tmp, "wb") as out:
            out.write(index.to_bytes())
            out.flush()
            os.fsync(out.fileno())
        final = self.index_path(image_uuid, file)
        # A version file's name is never reused (pxed.storage), so an index
        # already there is this very file's, from a run a crash cut off.
        os.replace(tmp, final)
        fsync_dir(final.parent)

    def _parent_digests(self, image_uuid: str, parent_file: str | None) -> set[bytes]:
        if parent_file is None:
            return set()
        try:
            return set(self.index(image_uuid, parent_file).digests)
        except (OSError, chunkindex.IndexError_):
            return set()

    # -- reading --------------------------------------------------------------

    def read(self, digest: bytes, length: int) -> bytes:
        """A chunk's bytes, checked against its name."""
        try:
            packed = self.chunk_path(digest).read_bytes()
            data = zstandard.ZstdDecompressor().decompress(packed, max_output_size=length)
        except FileNotFoundError:
            raise ChunkMissing(f"chunk {digest.hex()} is not in the store") from None
        except zstandard.ZstdError:
            raise ChunkMissing(f"chunk {digest.hex()} is damaged") from None
        if len(data) != length or hashlib.sha256(data).digest() != digest:
            raise ChunkMissing(f"chunk {digest.hex()} does not match its name")
        return data

    # -- collection -----------------------------------------------------------

    def collect(self) -> Collected | None:
        """Remove every chunk no index names.  None if indexing (here or on
        another server) holds the lock: try again later."""
        try:
            with self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB):
                return self._sweep(self._named())
        except BlockingIOError:
            return None

    def _sweep(self, named: set[bytes]) -> Collected:
        kept = removed = removed_bytes = 0
        for path in self._chunk_files():
            try:
                digest = bytes.fromhex(path.name)
            except ValueError:
                continue
            if digest in named:
                kept += 1
                continue
            with contextlib.suppress(FileNotFoundError):
                removed_bytes += path.stat().st_size
                path.unlink()
                removed += 1
        return Collected(kept, removed, removed_bytes)

    def _named(self) -> set[bytes]:
        named: set[bytes] = set()
        if not self.images.is_dir():
            return named
        for path in self.images.glob("*/*" + INDEX_SUFFIX):
            try:
                named.update(chunkindex.read(path).digests)
            except FileNotFoundError:
                continue  # its version went meanwhile
            except chunkindex.IndexError_:
                # Unreadable: its chunks cannot be told apart, so none go.
                raise RuntimeError(f"{path} is not a chunk index; not collecting") from None
        return named

    def _chunk_files(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for sub in self.root.iterdir():
            if len(sub.name) == 2 and sub.is_dir():
                yield from sub.iterdir()

    def stored_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._chunk_files())

    @contextlib.contextmanager
    def _lock(self, how: int) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "gc.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, how)
            yield
        finally:
            os.close(fd)


def syncfs(path: Path) -> None:
    """Flush the filesystem *path* is on (syncfs(2)); Python has no
    os.syncfs."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc().syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC
