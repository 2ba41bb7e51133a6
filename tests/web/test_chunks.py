"""The chunk store as a user meets it: versions indexed in the background,
downloads assembled from chunks byte for byte, what versions share, and
deleting a version freeing exactly the chunks nothing else uses."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest_twisted

from pxed.agent import chunkindex
from tests.helpers import MIB, WriteLock, new_image, new_setup, upload, upload_version

SIZE = 4 * MIB


def disk(seed: int = 1, size: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(size)


def changed(data: bytes, places: int = 20, seed: int = 2) -> bytes:
    """*data* with *places* scattered 100-byte changes."""
    out = bytearray(data)
    rnd = random.Random(seed)
    for _ in range(places):
        at = rnd.randrange(len(out) - 100)
        out[at : at + 100] = rnd.randbytes(100)
    return bytes(out)


async def indexed(server) -> None:
    await server.pxed.store.chunker.idle()


def chunk_files(server) -> set[str]:
    root = Path(server.config.data_dir) / "chunks"
    return {p.name for p in root.glob("??/*")}


def version_json(image: dict, number: int) -> dict:
    return next(v for v in image["Versions"] if v["Version"] == number)


@pytest_twisted.ensureDeferred
async def test_version_served_from_chunks_byte_for_byte(start_server):
    server = await start_server(chunk_store=True)
    image = await new_image(server.admin, size=SIZE)
    data = disk()
    v = await upload_version(server.admin, image, data)
    await indexed(server)
    whole = Path(server.config.data_dir) / "images" / image / f"{v}.img"
    assert not whole.exists(), "the whole file goes once the version is indexed"
    assert whole.with_name(whole.name + ".idx").is_file()

    r = await server.admin.get(f"/image/{image}/{v}")
    assert r.code == 200
    assert r.body == data
    assert r.header("X-Checksum-Sha256") == hashlib.sha256(data).hexdigest()
    assert r.header("ETag") == f'"{hashlib.sha256(data).hexdigest()}"'

    # Ranges, across chunk boundaries and to the end, as pxectl resumes.
    for first, last in ((0, 0), (65_000, 400_000), (SIZE - 10, SIZE - 1), (123, SIZE - 1)):
        r = await server.admin.get(
            f"/image/{image}/{v}", headers={"Range": f"bytes={first}-{last}"}
        )
        assert r.code == 206
        assert r.body == data[first : last + 1]
        assert r.header("Content-Range") == f"bytes {first}-{last}/{SIZE}"
    r = await server.admin.get(f"/image/{image}/{v}", headers={"Range": f"bytes={SIZE}-"})
    assert r.code == 416

    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    r = await server.admin.get(f"/image/{image}/{v}", headers={"If-None-Match": etag})
    assert r.code == 304 and r.body == b""
    r = await server.admin.get(
        f"/image/{image}/{v}", headers={"Range": "bytes=0-9", "If-Range": '"stale"'}
    )
    assert (r.code, r.body) == (200, data), "a stale If-Range gets the whole version"
    head = await server.admin.head_headers(f"/image/{image}/{v}")
    assert (head["status"], head["content-length"]) == ("200", str(SIZE))
    r = await server.admin.get(f"/image/{image}/latest")
    assert r.body == data


@pytest_twisted.ensureDeferred
async def test_versions_show_what_they_share(start_server):
    server = await start_server(chunk_store=True)
    image = await new_image(server.admin, size=SIZE)
    one = disk()
    two = changed(one)
    await upload_version(server.admin, image, one)
    await indexed(server)
    before = chunk_files(server)
    await upload_version(server.admin, image, two)
    await indexed(server)
    got = (await server.admin.get(f"/image/{image}")).json()
    v1, v2 = version_json(got, 1)["Chunks"], version_json(got, 2)["Chunks"]
    assert v1["Count"] > 10 and v1["UniqueBytes"] == SIZE
    assert v1["SharedWithParentBytes"] < 1 * MIB, "version 0 is blank: little in common"
    assert v2["SharedWithParentBytes"] > 0.6 * SIZE
    # Only the changed chunks were stored: at most one (~64-256 KiB) each.
    added = chunk_files(server) - before
    assert 0 < len(added) <= 20 * 2
    r = await server.admin.get(f"/image/{image}/2")
    assert r.body == two

    text = (await server.admin.get("/metrics")).text
    assert 'pxed_chunk_bytes_total{kind="served"}' in text
    assert "pxed_versions_indexed_total 3.0" in text


@pytest_twisted.ensureDeferred
async def test_deleting_a_version_frees_only_its_own_chunks(start_server):
    server = await start_server(chunk_store=True)
    image = await new_image(server.admin, size=SIZE)
    one, two = disk(1), changed(disk(1))
    await upload_version(server.admin, image, one)
    await indexed(server)
    only_zero = chunk_files(server)
    await upload_version(server.admin, image, two)
    await indexed(server)
    with_two = chunk_files(server)

    r = await server.admin.delete(f"/image/{image}/2")
    assert r.code == 200, r.text
    assert r.json()["Version"] == 2
    await server.pxed.store.chunker.collect()
    assert chunk_files(server) == only_zero, "exactly version 2's own chunks went"
    assert with_two > only_zero
    assert (await server.admin.get(f"/image/{image}/2")).code == 404
    assert (await server.admin.get(f"/image/{image}/1")).body == one
    got = (await server.admin.get(f"/image/{image}")).json()
    versions = [v["Version"] for v in got["Versions"]]
    assert versions == [0, 1]


@pytest_twisted.ensureDeferred
async def test_deleting_a_version_is_refused_when_something_needs_it(start_server):
    server = await start_server(chunk_store=True)
    alice = await server.user("alice")
    image = await new_image(alice, size=SIZE)
    await upload_version(alice, image, disk())
    await new_setup(alice, "alice", [{"UUID": image, "Version": 1}])

    r = await server.anonymous.delete(f"/image/{image}/1")
    assert r.code == 401
    bob = await server.user("bob")
    r = await bob.delete(f"/image/{image}/1")
    assert r.code in (403, 404)
    r = await alice.delete(f"/image/{image}/1")
    assert r.code == 409 and "frozen in setup" in r.json()["error"]
    r = await alice.delete(f"/image/{image}/7")
    assert r.code == 404
    r = await alice.delete(f"/image/{image}/0")
    assert r.code == 200
    r = await alice.delete(f"/image/{image}/1")
    assert r.code == 409 and "only version" in r.json()["error"]
    await indexed(server)
    assert (await alice.get(f"/image/{image}/1")).body == disk()


@pytest_twisted.ensureDeferred
async def test_whole_files_kept_when_asked(start_server):
    server = await start_server(chunk_store=True, keep_whole_files=True)
    image = await new_image(server.admin, size=SIZE)
    data = disk()
    v = await upload_version(server.admin, image, data)
    await indexed(server)
    whole = Path(server.config.data_dir) / "images" / image / f"{v}.img"
    assert whole.read_bytes() == data
    r = await server.admin.get(f"/image/{image}/{v}")
    assert r.body == data
    got = (await server.admin.get(f"/image/{image}")).json()
    assert version_json(got, v)["Chunks"]["UniqueBytes"] == SIZE


@pytest_twisted.ensureDeferred
async def test_versions_committed_without_the_store_are_indexed_at_start(start_server):
    first = await start_server(chunk_store=False)
    image = await new_image(first.admin, size=SIZE)
    data = disk()
    await upload_version(first.admin, image, data)
    got = (await first.admin.get(f"/image/{image}")).json()
    assert version_json(got, 1)["Chunks"] is None
    await first.pxed.service.stopService()

    again = await start_server(chunk_store=True, data_dir=str(first.config.data_dir))
    await indexed(again)
    got = (await again.admin.get(f"/image/{image}")).json()
    assert version_json(got, 1)["Chunks"]["UniqueBytes"] == SIZE
    assert (await again.admin.get(f"/image/{image}/1")).body == data


@pytest_twisted.ensureDeferred
async def test_a_damaged_chunk_cuts_the_download_short(start_server):
    """A chunk whose bytes no longer match its name is never served: the
    client sees a short body (its sha256 check fails), not wrong bytes."""
    server = await start_server(chunk_store=True)
    image = await new_image(server.admin, size=SIZE)
    data = disk()
    v = await upload_version(server.admin, image, data)
    await indexed(server)
    victim = sorted((Path(server.config.data_dir) / "chunks").glob("??/*"))[0]
    victim.write_bytes(b"not a zstd frame")
    try:
        r = await server.admin.get(f"/image/{image}/{v}")
    except Exception:
        return  # the connection was cut: what a client should see
    assert r.body != data and len(r.body) < SIZE


@pytest_twisted.ensureDeferred
async def test_replaced_version_is_indexed_again(start_server):
    server = await start_server(chunk_store=True)
    image = await new_image(server.admin, size=SIZE)
    await upload_version(server.admin, image, disk(1))
    await indexed(server)
    r = await upload(server.admin, f"/image/{image}", disk(3), {"X-BAAS-NewVersion": "false"})
    assert r.code == 200, r.text
    await indexed(server)
    got = (await server.admin.get(f"/image/{image}")).json()
    assert version_json(got, 1)["Chunks"]["UniqueBytes"] == SIZE
    assert (await server.admin.get(f"/image/{image}/1")).body == disk(3)
    left = os.listdir(Path(server.config.data_dir) / "images" / image)
    assert len([n for n in left if n.endswith(".idx")]) == 2, left


@pytest_twisted.ensureDeferred
async def test_a_version_index_is_served_to_its_owner(start_server):
    server = await start_server(chunk_store=True)
    alice = await server.user("alice")
    image = await new_image(alice, size=SIZE)
    data = disk()
    v = await upload_version(alice, image, data)
    await indexed(server)
    r = await alice.get(f"/image/{image}/{v}/index")
    assert r.code == 200, r.text
    index = chunkindex.parse(r.body)
    assert (index.size, index.sha256) == (SIZE, hashlib.sha256(data).hexdigest())
    for offset, length, digest in zip(index.offsets, index.lengths, index.digests, strict=True):
        assert hashlib.sha256(data[offset : offset + length]).digest() == digest
    assert (await server.anonymous.get(f"/image/{image}/{v}/index")).code == 401
    bob = await server.user("bob")
    assert (await bob.get(f"/image/{image}/{v}/index")).code in (403, 404)
    assert (await alice.get(f"/image/{image}/9/index")).code == 404


@pytest_twisted.ensureDeferred
async def test_no_index_without_the_store(server):
    image = await new_image(server.admin, size=SIZE)
    r = await server.admin.get(f"/image/{image}/0/index")
    assert r.code == 404 and "chunk store" in r.json()["error"]


@pytest_twisted.ensureDeferred
async def test_deleting_a_version_with_the_database_busy_is_503_and_changes_nothing(
    start_server,
):
    server = await start_server(chunk_store=True, db_busy_timeout=0.2)
    image = await new_image(server.admin, size=SIZE)
    await upload_version(server.admin, image, disk())
    await indexed(server)
    before = chunk_files(server)
    holder = WriteLock(server, "images").take()
    try:
        r = await server.admin.delete(f"/image/{image}/1")
    finally:
        holder.close()
    assert r.code == 503, r.text
    assert "error" in r.json()
    got = (await server.admin.get(f"/image/{image}")).json()
    assert [v["Version"] for v in got["Versions"]] == [0, 1]
    assert (await server.admin.get(f"/image/{image}/1")).body == disk()
    await server.pxed.store.chunker.collect()
    assert chunk_files(server) == before
