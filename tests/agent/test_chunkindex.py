"""The chunk index format and its content-defined cut: an index survives
its own bytes, describes the file it was made from chunk by chunk, changes
little when the file changes a little, and a parser refuses every
malformed index instead of trusting it."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from pxed.agent import chunkindex
from pxed.agent.chunkindex import Index

MIB = 1024 * 1024
AVERAGE = 65536


def random_bytes(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def index_of(path: Path, blob: bytes, average: int = AVERAGE) -> Index:
    path.write_bytes(blob)
    with open(path, "rb") as f:
        return chunkindex.index_file(f, average)


def crafted(lengths: tuple[int, ...], size: int | None = None, bounds=None) -> Index:
    """An index with these chunk lengths (digests made up), which to_bytes
    packs as given: what a damaged or hostile index might say."""
    lo, avg, hi = bounds or chunkindex.bounds(AVERAGE)
    return Index(
        sum(lengths) if size is None else size,
        hashlib.sha256(b"whole").hexdigest(),
        lo,
        avg,
        hi,
        lengths,
        tuple(hashlib.sha256(bytes([i % 256])).digest() for i in range(len(lengths))),
    )


def test_a_file_indexes_to_chunks_that_are_its_bytes(tmp_path):
    blob = random_bytes(4 * MIB)
    index = index_of(tmp_path / "disk.img", blob)

    assert index.size == len(blob)
    assert index.sha256 == hashlib.sha256(blob).hexdigest()
    assert (index.min, index.avg, index.max) == chunkindex.bounds(AVERAGE)
    assert len(index) > 1
    assert len(index.offsets) == len(index)
    assert index.offsets[0] == 0
    assert sum(index.lengths) == len(blob)
    for offset, length, digest in zip(index.offsets, index.lengths, index.digests, strict=True):
        assert digest == hashlib.sha256(blob[offset : offset + length]).digest()
    # Each chunk starts where the one before ends.
    for i in range(1, len(index)):
        assert index.offsets[i] == index.offsets[i - 1] + index.lengths[i - 1]


def test_chunks_stay_within_the_bounds(tmp_path):
    index = index_of(tmp_path / "disk.img", random_bytes(4 * MIB, seed=2))
    lo, _, hi = chunkindex.bounds(AVERAGE)
    for length in index.lengths[:-1]:
        assert lo <= length <= hi
    # The last one is whatever is left: at most the maximum, maybe less
    # than the minimum.
    assert 0 < index.lengths[-1] <= hi
    # And the average is about what was asked for (random bytes).
    assert AVERAGE / 2 < index.size / len(index) < AVERAGE * 2


def test_an_index_round_trips_through_its_bytes(tmp_path):
    index = index_of(tmp_path / "disk.img", random_bytes(3 * MIB + 12345, seed=3))
    data = index.to_bytes()
    assert len(data) == chunkindex.HEAD.size + len(index) * chunkindex.ENTRY.size
    assert chunkindex.parse(data) == index
    (tmp_path / "disk.img.idx").write_bytes(data)
    assert chunkindex.read(tmp_path / "disk.img.idx") == index


def test_the_same_bytes_index_the_same(tmp_path):
    blob = random_bytes(2 * MIB, seed=4)
    assert index_of(tmp_path / "a.img", blob) == index_of(tmp_path / "b.img", blob)


def test_an_insertion_changes_only_the_chunks_around_it(tmp_path):
    blob = random_bytes(4 * MIB, seed=5)
    middle = len(blob) // 2
    changed = blob[:middle] + random_bytes(1000, seed=6) + blob[middle:]
    old = index_of(tmp_path / "old.img", blob)
    new = index_of(tmp_path / "new.img", changed)

    assert new.size == old.size + 1000
    assert new.sha256 != old.sha256
    fresh = set(new.digests) - set(old.digests)
    assert 1 <= len(fresh) <= 3
    # Everything after the insertion is cut as before, shifted: a fixed-size
    # cut would have lost every chunk from the middle on.
    assert sum(n for d, n in new.unique().items() if d in set(old.digests)) > 0.8 * old.size
    assert new.digests[-1] == old.digests[-1]


def test_an_empty_file_indexes_to_no_chunks(tmp_path):
    index = index_of(tmp_path / "empty.img", b"")
    assert index.size == 0
    assert len(index) == 0
    assert index.offsets == ()
    assert index.sha256 == hashlib.sha256(b"").hexdigest()
    assert index.unique_bytes() == 0
    assert chunkindex.parse(index.to_bytes()) == index


def test_unique_counts_a_repeated_chunk_once(tmp_path):
    piece = random_bytes(MIB, seed=7)
    index = index_of(tmp_path / "twice.img", piece * 4)
    assert index.size == 4 * MIB
    assert len(set(index.digests)) < len(index)
    assert index.unique_bytes() < 2 * MIB


def test_bounds_are_a_quarter_and_four_times_the_average():
    assert chunkindex.bounds(AVERAGE) == (AVERAGE // 4, AVERAGE, AVERAGE * 4)
    lo, avg, hi = chunkindex.bounds(chunkindex.MIN_AVERAGE)
    assert (lo, avg, hi) == (4096, 16384, 65536)
    assert chunkindex.bounds(chunkindex.MAX_AVERAGE)[1] == chunkindex.MAX_AVERAGE


@pytest.mark.parametrize(
    "average", [0, -AVERAGE, chunkindex.MIN_AVERAGE - 1, chunkindex.MAX_AVERAGE + 1]
)
def test_bounds_refuse_an_average_out_of_range(average):
    with pytest.raises(ValueError, match="average chunk size"):
        chunkindex.bounds(average)


# -- a parser that trusts nothing ---------------------------------------------


def test_a_well_formed_crafted_index_parses():
    # The control for the refusals below: the same construction, intact.
    index = crafted((1000, 2000, 3000))
    assert chunkindex.parse(index.to_bytes()) == index


@pytest.mark.parametrize("keep", [0, 1, chunkindex.HEAD.size - 1, chunkindex.HEAD.size])
def test_parse_refuses_a_truncated_head(keep):
    data = crafted((1000, 2000)).to_bytes()
    with pytest.raises(chunkindex.IndexError_):
        chunkindex.parse(data[:keep])


@pytest.mark.parametrize("cut", [1, chunkindex.ENTRY.size - 1, chunkindex.ENTRY.size])
def test_parse_refuses_truncated_entries(cut):
    data = crafted((1000, 2000, 3000)).to_bytes()
    with pytest.raises(chunkindex.IndexError_):
        chunkindex.parse(data[:-cut])


def test_parse_refuses_bad_magic():
    data = crafted((1000,)).to_bytes()
    with pytest.raises(chunkindex.IndexError_, match="not a pxed chunk index"):
        chunkindex.parse(b"NOTANIDX" + data[8:])


def test_parse_refuses_another_format_version():
    data = bytearray(crafted((1000,)).to_bytes())
    data[8:12] = (2).to_bytes(4, "little")
    with pytest.raises(chunkindex.IndexError_, match="not a pxed chunk index"):
        chunkindex.parse(bytes(data))


@pytest.mark.parametrize("size", [5999, 6001, 0])
def test_parse_refuses_lengths_not_adding_up_to_the_size(size):
    data = crafted((1000, 2000, 3000), size=size).to_bytes()
    with pytest.raises(chunkindex.IndexError_, match="add up"):
        chunkindex.parse(data)


def test_parse_refuses_a_zero_length_chunk():
    # The lengths still add up to the size: only the empty chunk is wrong.
    data = crafted((1000, 0, 3000)).to_bytes()
    with pytest.raises(chunkindex.IndexError_, match="outside"):
        chunkindex.parse(data)


def test_parse_refuses_a_chunk_over_the_maximum():
    hi = chunkindex.bounds(AVERAGE)[2]
    assert chunkindex.parse(crafted((hi, 10)).to_bytes()).lengths == (hi, 10)
    data = crafted((hi + 1, 10)).to_bytes()
    with pytest.raises(chunkindex.IndexError_, match="outside"):
        chunkindex.parse(data)


@pytest.mark.parametrize("bounds", [(0, 0, 0), (100, 50, 200), (100, 200, 150)])
def test_parse_refuses_bounds_out_of_order(bounds):
    data = crafted((10,), bounds=bounds).to_bytes()
    with pytest.raises(chunkindex.IndexError_, match="bounds"):
        chunkindex.parse(data)


@pytest.mark.parametrize("count", [2, 4, 0, 2**32])
def test_parse_refuses_a_count_not_matching_the_entries(count):
    index = crafted((1000, 2000, 3000))
    data = bytearray(index.to_bytes())
    count_at = chunkindex.HEAD.size - 8
    data[count_at : chunkindex.HEAD.size] = count.to_bytes(8, "little")
    with pytest.raises(chunkindex.IndexError_, match="do not fit"):
        chunkindex.parse(bytes(data))


def test_parse_refuses_trailing_bytes():
    data = crafted((1000, 2000)).to_bytes()
    with pytest.raises(chunkindex.IndexError_):
        chunkindex.parse(data + b"\0")
