"""The chunk store on its own, on a real filesystem: a version indexed into
it reads back byte for byte from its chunks, a new version stores only
what changed, collection removes exactly the chunks no index names, and
collection and indexing keep out of each other's way across processes
through gc.lock."""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import zstandard

from pxed.agent import chunkindex
from pxed.agent.chunkindex import Index
from pxed.chunkstore import ChunkMissing, ChunkStore, Collected, Indexed
from pxed.sparse import Cancelled
from pxed.storage import STALE_STAGING

MIB = 1024 * 1024
AVERAGE = 65536


@pytest.fixture
def data_dir(data_root: Path) -> Path:
    """On the RAM filesystem where there is one (tests/conftest.py): the
    store flushes with syncfs(2), which on this VM's disk would wait for
    whatever else the suite is writing."""
    return data_root


@pytest.fixture
def store(data_dir: Path) -> ChunkStore:
    store = ChunkStore(data_dir, AVERAGE)
    store.prepare()
    return store


def random_bytes(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def put_version(data_dir: Path, image: str, file: str, blob: bytes) -> str:
    """A committed version's file, as pxed.storage leaves it; its sha256."""
    directory = data_dir / "images" / image
    directory.mkdir(parents=True, exist_ok=True)
    (directory / file).write_bytes(blob)
    return hashlib.sha256(blob).hexdigest()


def index_blob(
    store: ChunkStore, image: str, file: str, blob: bytes, parent_file: str | None = None
) -> Indexed:
    sha = put_version(store.images.parent, image, file, blob)
    return store.index_version(image, file, sha, parent_file=parent_file)


def reassemble(store: ChunkStore, index: Index) -> bytes:
    return b"".join(
        store.read(digest, length)
        for digest, length in zip(index.digests, index.lengths, strict=True)
    )


def scattered_changes(blob: bytes, count: int, seed: int) -> bytes:
    """*blob* with *count* 100-byte runs rewritten, evenly spread."""
    rng = random.Random(seed)
    out = bytearray(blob)
    for i in range(count):
        at = (2 * i + 1) * len(blob) // (2 * count)
        out[at : at + 100] = rng.randbytes(100)
    return bytes(out)


def chunk_names(store: ChunkStore) -> set[bytes]:
    return {bytes.fromhex(p.name) for p in store._chunk_files()}


def test_a_version_reads_back_from_its_chunks(store, data_dir):
    image = str(uuid.uuid4())
    blob = random_bytes(4 * MIB)
    sha = put_version(data_dir, image, "0.img", blob)

    indexed = store.index_version(image, "0.img", sha)

    idx = data_dir / "images" / image / "0.img.idx"
    assert idx.is_file()
    assert store.has_index(image, "0.img")
    index = store.index(image, "0.img")
    assert index == chunkindex.read(idx)
    assert index.size == len(blob)
    assert index.sha256 == sha
    assert reassemble(store, index) == blob

    assert indexed.size == len(blob)
    assert indexed.chunks == len(index) > 1
    assert indexed.unique_bytes == index.unique_bytes() == len(blob)
    assert indexed.new_chunks == len(set(index.digests))
    assert indexed.new_bytes == len(blob)
    assert indexed.shared_bytes == 0  # no parent
    assert indexed.stored_bytes > 0
    assert store.stored_bytes() == indexed.stored_bytes
    # Every chunk under its name, and nothing left in staging.
    assert chunk_names(store) == set(index.digests)
    for digest in index.digests:
        assert store.chunk_path(digest).parent.name == digest.hex()[:2]
    assert list(store.staging.path.iterdir()) == []


def test_repeated_and_compressible_bytes_are_stored_once_and_small(store):
    image = str(uuid.uuid4())
    piece = random_bytes(MIB, seed=2)
    blob = piece + bytes(2 * MIB) + piece + b"pxed " * (MIB // 5)

    indexed = index_blob(store, image, "0.img", blob)

    index = store.index(image, "0.img")
    assert reassemble(store, index) == blob
    assert indexed.new_chunks == len(set(index.digests)) < indexed.chunks
    assert indexed.unique_bytes < indexed.size
    assert indexed.new_bytes == indexed.unique_bytes
    # The zeros and the text shrink; the random megabyte does not.
    assert indexed.stored_bytes < indexed.new_bytes * 0.75
    assert store.stored_bytes() == indexed.stored_bytes


def test_a_new_version_stores_only_what_changed(store):
    image = str(uuid.uuid4())
    first = random_bytes(8 * MIB, seed=3)
    second = scattered_changes(first, 8, seed=4)
    a = index_blob(store, image, "0.img", first)

    b = index_blob(store, image, "1.img", second, parent_file="0.img")

    old = store.index(image, "0.img")
    new = store.index(image, "1.img")
    assert reassemble(store, new) == second
    assert reassemble(store, old) == first
    assert b.size == len(second)
    assert 0 < b.new_bytes < 0.15 * b.size
    assert b.shared_bytes > 0.8 * b.size
    # Exactly: the new chunks are the second's digests the first lacks.
    fresh = set(new.digests) - set(old.digests)
    unique = new.unique()
    assert b.new_chunks == len(fresh)
    assert b.new_bytes == sum(unique[d] for d in fresh)
    assert b.shared_bytes == sum(n for d, n in unique.items() if d in set(old.digests))
    assert b.shared_bytes + b.new_bytes == b.unique_bytes
    assert store.stored_bytes() == a.stored_bytes + b.stored_bytes


def test_a_parent_that_cannot_be_read_shares_nothing(store):
    image = str(uuid.uuid4())
    blob = random_bytes(MIB, seed=5)
    index_blob(store, image, "0.img", blob)
    again = index_blob(store, image, "1.img", blob, parent_file="no-such.img")
    assert again.new_chunks == 0
    assert again.shared_bytes == 0


def test_an_identical_version_stores_nothing_new(store):
    image = str(uuid.uuid4())
    blob = random_bytes(4 * MIB, seed=6)
    first = index_blob(store, image, "0.img", blob)
    before = store.stored_bytes()

    again = index_blob(store, image, "1.img", blob, parent_file="0.img")

    assert again.new_chunks == 0
    assert again.new_bytes == 0
    assert again.stored_bytes == 0
    assert again.chunks == first.chunks
    assert again.shared_bytes == again.unique_bytes == len(blob)
    assert store.stored_bytes() == before
    assert store.index(image, "1.img").digests == store.index(image, "0.img").digests
    # Another image with the same bytes shares the chunks too.
    other = index_blob(store, str(uuid.uuid4()), "0.img", blob)
    assert other.new_chunks == 0
    assert store.stored_bytes() == before


def test_an_empty_version_indexes_to_no_chunks(store):
    image = str(uuid.uuid4())
    indexed = index_blob(store, image, "0.img", b"")
    assert (indexed.size, indexed.chunks, indexed.new_chunks) == (0, 0, 0)
    index = store.index(image, "0.img")
    assert len(index) == 0
    assert index.sha256 == hashlib.sha256(b"").hexdigest()


def test_a_cancelled_indexing_places_no_index(store):
    image = str(uuid.uuid4())
    sha = put_version(store.images.parent, image, "0.img", random_bytes(MIB, seed=7))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        store.index_version(image, "0.img", sha, cancel=cancel)
    assert not store.has_index(image, "0.img")
    assert chunk_names(store) == set()
    assert list(store.staging.path.iterdir()) == []


def test_a_store_refuses_a_bad_average(data_dir):
    with pytest.raises(ValueError):
        ChunkStore(data_dir, chunkindex.MIN_AVERAGE - 1)


# -- collection ---------------------------------------------------------------


def test_collect_removes_exactly_the_chunks_no_index_names(store):
    image = str(uuid.uuid4())
    first = random_bytes(8 * MIB, seed=8)
    second = scattered_changes(first, 8, seed=9)
    index_blob(store, image, "0.img", first)
    index_blob(store, image, "1.img", second, parent_file="0.img")
    old = set(store.index(image, "0.img").digests)
    new = store.index(image, "1.img")
    stored = store.stored_bytes()

    # With every index in place nothing goes.
    untouched = store.collect()
    assert untouched == Collected(kept=len(old | set(new.digests)), removed=0, removed_bytes=0)

    store.index_path(image, "0.img").unlink()
    collected = store.collect()

    only_first = old - set(new.digests)
    assert only_first  # the test means something
    assert isinstance(collected, Collected)
    assert collected.removed == len(only_first)
    assert collected.kept == len(set(new.digests))
    assert chunk_names(store) == set(new.digests)
    assert collected.removed_bytes == stored - store.stored_bytes() > 0
    for digest in only_first:
        with pytest.raises(ChunkMissing):
            store.read(digest, 1)
    assert reassemble(store, new) == second

    # Nothing changed since: nothing more goes.
    assert store.collect() == Collected(kept=len(set(new.digests)), removed=0, removed_bytes=0)
    assert reassemble(store, new) == second


def test_collect_keeps_chunks_another_image_still_names(store):
    blob = random_bytes(2 * MIB, seed=10)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    index_blob(store, a, "0.img", blob)
    index_blob(store, b, "0.img", blob)
    store.index_path(a, "0.img").unlink()

    collected = store.collect()

    assert collected is not None
    assert collected.removed == 0
    assert reassemble(store, store.index(b, "0.img")) == blob


def test_collect_refuses_when_an_index_is_unreadable(store):
    image = str(uuid.uuid4())
    index_blob(store, image, "0.img", random_bytes(MIB, seed=11))
    orphaned = str(uuid.uuid4())
    index_blob(store, orphaned, "0.img", random_bytes(MIB, seed=12))
    store.index_path(orphaned, "0.img").unlink()
    before = chunk_names(store)
    store.index_path(image, "1.img").write_bytes(b"not an index")

    # A damaged index could name any chunk: none may go, not even the
    # orphaned image's.
    with pytest.raises(RuntimeError, match="not a chunk index"):
        store.collect()
    assert chunk_names(store) == before


def test_collect_with_no_images_removes_every_chunk(store):
    image = str(uuid.uuid4())
    index_blob(store, image, "0.img", random_bytes(MIB, seed=13))
    count = len(chunk_names(store))
    (store.images / image / "0.img.idx").unlink()
    (store.images / image / "0.img").unlink()
    (store.images / image).rmdir()
    store.images.rmdir()

    collected = store.collect()

    assert collected is not None
    assert (collected.kept, collected.removed) == (0, count)
    assert store.stored_bytes() == 0


# -- gc.lock across processes -------------------------------------------------

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, getattr(fcntl, sys.argv[2]))
print("held", flush=True)
sys.stdin.read()
"""


class Holder:
    """Another process (another server, say) holding gc.lock until
    released: it says so once it holds it, and lets go when its stdin
    closes (or when the test process goes)."""

    def __init__(self, store: ChunkStore, how: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(store.root / "gc.lock"), how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line == "held\n", f"the holder did not take the lock: {line!r}"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            assert self.proc.wait(timeout=10) == 0
        self.proc.stdout.close()

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if not pipe.closed:
                pipe.close()


def test_collect_waits_for_indexing_elsewhere(store):
    image = str(uuid.uuid4())
    index_blob(store, image, "0.img", random_bytes(MIB, seed=14))
    store.index_path(image, "0.img").unlink()  # its chunks are garbage now
    orphans = chunk_names(store)
    assert orphans

    with Holder(store, "LOCK_SH") as holder:
        assert store.collect() is None
        assert chunk_names(store) == orphans
        holder.release()
        collected = store.collect()

    assert collected is not None
    assert collected.removed == len(orphans)
    assert chunk_names(store) == set()


def test_two_indexers_share_the_lock(store):
    image = str(uuid.uuid4())
    blob = random_bytes(MIB, seed=15)
    with Holder(store, "LOCK_SH"):
        indexed = index_blob(store, image, "0.img", blob)
    assert indexed.new_chunks > 0
    assert reassemble(store, store.index(image, "0.img")) == blob


def test_indexing_waits_for_a_collection_elsewhere(store):
    image = str(uuid.uuid4())
    blob = random_bytes(2 * MIB, seed=16)
    sha = put_version(store.images.parent, image, "0.img", blob)
    results: list[object] = []

    def index() -> None:
        try:
            results.append(store.index_version(image, "0.img", sha))
        except BaseException as e:
            results.append(e)

    with Holder(store, "LOCK_EX") as holder:
        worker = threading.Thread(target=index, daemon=True)
        worker.start()
        time.sleep(0.3)
        assert worker.is_alive(), f"indexing ran during a collection: {results}"
        assert not store.has_index(image, "0.img")
        assert chunk_names(store) == set()
        holder.release()
        worker.join(timeout=30)

    assert not worker.is_alive()
    [indexed] = results
    assert isinstance(indexed, Indexed), indexed
    assert reassemble(store, store.index(image, "0.img")) == blob


def test_the_lock_is_let_go_after_indexing_and_collecting(store):
    image = str(uuid.uuid4())
    index_blob(store, image, "0.img", random_bytes(MIB, seed=17))
    assert store.collect() is not None
    fd = os.open(store.root / "gc.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if anything kept it
    finally:
        os.close(fd)


# -- reading damaged or missing chunks ----------------------------------------


@pytest.fixture
def one_chunk(store) -> tuple[bytes, int, Path]:
    image = str(uuid.uuid4())
    blob = random_bytes(AVERAGE // 2, seed=18)  # under the minimum: one chunk
    index_blob(store, image, "0.img", blob)
    index = store.index(image, "0.img")
    assert len(index) == 1
    digest, length = index.digests[0], index.lengths[0]
    assert store.read(digest, length) == blob
    return digest, length, store.chunk_path(digest)


def test_a_chunk_with_other_bytes_of_its_length_is_missing(store, one_chunk):
    digest, length, path = one_chunk
    path.write_bytes(zstandard.ZstdCompressor().compress(random_bytes(length, seed=19)))
    with pytest.raises(ChunkMissing, match="does not match"):
        store.read(digest, length)


def test_a_chunk_with_bytes_of_another_length_is_missing(store, one_chunk):
    digest, length, path = one_chunk
    path.write_bytes(zstandard.ZstdCompressor().compress(b"short"))
    with pytest.raises(ChunkMissing):
        store.read(digest, length)


def test_a_chunk_that_is_not_zstd_is_missing(store, one_chunk):
    digest, length, path = one_chunk
    path.write_bytes(random_bytes(1000, seed=20))
    with pytest.raises(ChunkMissing, match="damaged"):
        store.read(digest, length)


def test_a_truncated_chunk_is_missing(store, one_chunk):
    digest, length, path = one_chunk
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ChunkMissing):
        store.read(digest, length)


def test_a_deleted_chunk_is_missing(store, one_chunk):
    digest, length, path = one_chunk
    path.unlink()
    with pytest.raises(ChunkMissing, match="not in the store"):
        store.read(digest, length)


def test_a_chunk_read_with_the_wrong_length_is_missing(store, one_chunk):
    digest, length, _ = one_chunk
    with pytest.raises(ChunkMissing):
        store.read(digest, length - 1)


# -- staging ------------------------------------------------------------------


def test_prepare_clears_this_servers_leftovers_only(data_dir):
    staging = data_dir / "chunks" / ".staging"
    mine = staging / "alpha~work-abc123"
    fresh = staging / "beta~work-def456"
    stale = staging / "beta~work-old789"
    for d in (mine, fresh, stale):
        d.mkdir(parents=True)
        (d / ("0" * 64)).write_bytes(b"half a chunk")
    old = time.time() - STALE_STAGING - 3600
    os.utime(stale, (old, old))

    removed = ChunkStore(data_dir, AVERAGE, server="alpha").prepare()

    assert removed == 2
    assert not mine.exists()
    assert not stale.exists()
    assert (fresh / ("0" * 64)).read_bytes() == b"half a chunk"
