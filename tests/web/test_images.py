"""Images: creation with version 0, metadata, listing, deletion."""

from __future__ import annotations

import gzip
import hashlib
import os
import time

import pytest_twisted
import zstandard
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from tests.helpers import (
    MIB,
    OCTETS,
    Response,
    entries,
    eventually,
    multipart,
    new_image,
    new_setup,
    require_tool,
    upload_version,
)


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


@pytest_twisted.ensureDeferred
async def test_create_with_defaults_makes_sparse_version_0(server):
    r = await server.admin.post("/image", {"Name": "debian"})
    assert r.code == 201, r.text
    image = r.json()
    assert (image["Name"], image["Type"], image["Username"]) == ("debian", "base", "admin")
    assert (image["DiskCompressionStrategy"], image["ImageFileType"], image["Filesystem"]) == (
        "none",
        "raw",
        "raw",
    )
    assert image["Size"] == 512 * MIB
    [v0] = image["Versions"]
    assert (v0["Version"], v0["Size"], v0["Origin"]) == (0, 512 * MIB, "created")
    path = server.config.data_dir / "images" / image["UUID"] / "0.img"
    assert os.stat(path).st_blocks == 0, "version 0 is sparse"
    assert v0["Sha256"] == sha256_of(path)


@pytest_twisted.ensureDeferred
async def test_filesystems_are_made(server):
    require_tool("mkfs.ext4", "e2fsprogs")
    require_tool("mkfs.fat", "dosfstools")
    r = await server.admin.post("/image", {"Name": "e", "Size": 16 * MIB, "Filesystem": "ext4"})
    assert r.code == 201, r.text
    with open(server.config.data_dir / "images" / r.json()["UUID"] / "0.img", "rb") as f:
        f.seek(1024 + 56)
        assert f.read(2) == b"\x53\xef", "ext4 superblock magic"

    r = await server.admin.post("/image", {"Name": "f", "Size": 64 * MIB, "Filesystem": "fat32"})
    assert r.code == 201, r.text
    with open(server.config.data_dir / "images" / r.json()["UUID"] / "0.img", "rb") as f:
        boot = f.read(512)
    assert boot[82:90] == b"FAT32   " and boot[510:512] == b"\x55\xaa"

    r = await server.admin.post("/image", {"Name": "tiny", "Size": MIB, "Filesystem": "fat32"})
    assert r.code == 400
    assert r.json()["error"].startswith("Filesystem")
    names = [i["Name"] for i in (await server.admin.get("/user/admin/images")).json()]
    assert names == ["e", "f"]
    assert os.listdir(server.config.data_dir / "images" / ".staging") == []


@pytest_twisted.ensureDeferred
async def test_compressed_version_0(server):
    r = await server.admin.post(
        "/image", {"Name": "z", "Size": 4 * MIB, "DiskCompressionStrategy": "gzip"}
    )
    image = r.json()
    path = server.config.data_dir / "images" / image["UUID"] / "0.img"
    with gzip.open(path) as f:
        assert f.read() == b"\0" * (4 * MIB)
    assert image["Versions"][0]["Size"] == os.path.getsize(path) < MIB


@pytest_twisted.ensureDeferred
async def test_compressed_blank_of_an_ext4_disk_reads_back(server):
    """Holes written as ready-made compressed zeros, the filesystem's
    metadata compressed: decompressed, it is the formatted disk."""
    require_tool("mkfs.ext4", "e2fsprogs")
    for compression in ("gzip", "zstd"):
        r = await server.admin.post(
            "/image",
            {
                "Name": compression,
                "Size": 64 * MIB,
                "Filesystem": "ext4",
                "DiskCompressionStrategy": compression,
            },
        )
        assert r.code == 201, r.text
        v0 = r.json()["Versions"][0]
        path = server.config.data_dir / "images" / r.json()["UUID"] / "0.img"
        assert (v0["Size"], v0["Sha256"]) == (os.path.getsize(path), sha256_of(path))
        if compression == "gzip":
            disk = gzip.decompress(path.read_bytes())
        else:
            disk = (
                zstandard.ZstdDecompressor()
                .stream_reader(path.read_bytes(), read_across_frames=True)
                .read()
            )
        assert len(disk) == 64 * MIB
        assert disk[1024 + 56 : 1024 + 58] == b"\x53\xef"  # the ext4 superblock's magic


@pytest_twisted.ensureDeferred
async def test_size_is_capped_by_max_image_size(start_server):
    server = await start_server(max_image_size=8 * MIB)
    r = await server.admin.post("/image", {"Name": "big", "Size": 8 * MIB + 1})
    assert r.code == 400, r.text
    assert "max_image_size" in r.json()["error"] and str(8 * MIB) in r.json()["error"]
    r = await server.admin.post("/image", {"Name": "ok", "Size": 8 * MIB})
    assert r.code == 201, r.text
    # The default: half the data dir's filesystem, so never 16 TiB.
    server = await start_server()
    fs = os.statvfs(server.config.data_dir)
    half = fs.f_blocks * fs.f_frsize // 2
    for size in (16 * 1024**4, half + 1):
        r = await server.admin.post(
            "/image", {"Name": "huge", "Size": size, "DiskCompressionStrategy": "gzip"}
        )
        assert r.code == 400, r.text
        assert "max_image_size" in r.json()["error"] and str(half) in r.json()["error"]
    assert os.listdir(server.config.data_dir / "images" / ".staging") == []


async def _stop_while_creating(server, body: dict) -> tuple[float, Response | None]:
    """Stop the server while it creates an image: how long the stop took,
    and the answer the creation got (None: none before the stop)."""
    staging = server.config.data_dir / "images" / ".staging"
    answer: list = []
    creating = Deferred.fromCoroutine(server.admin.post("/image", body))
    creating.addBoth(answer.append)
    await eventually(lambda: answer or os.listdir(staging))
    started = time.monotonic()
    stopped = server.pxed.service.stopService()
    stopped.addTimeout(STOP_WITHIN, reactor)
    await stopped
    took = time.monotonic() - started
    await eventually(lambda: answer)
    assert os.listdir(staging) == []
    return took, answer[0]


STOP_WITHIN = 20.0


@pytest_twisted.ensureDeferred
async def test_a_large_compressed_blank_does_not_hold_up_a_stop(start_server):
    """8 GiB with gzip: compressing its zeros took minutes of an IO thread,
    and a stop waited for them."""
    server = await start_server(max_image_size=1024**4)
    took, answer = await _stop_while_creating(
        server, {"Name": "big", "Size": 8 * 1024**3, "DiskCompressionStrategy": "gzip"}
    )
    assert took < STOP_WITHIN
    assert answer.code in (201, 503), answer


@pytest_twisted.ensureDeferred
async def test_a_stop_interrupts_hashing_a_large_blank(start_server):
    """1 TiB uncompressed: its sha256 has to see every byte (minutes); a
    stop interrupts it between pieces, answers 503 and leaves nothing."""
    server = await start_server(max_image_size=1024**4)
    took, answer = await _stop_while_creating(server, {"Name": "big", "Size": 1024**4})
    assert took < STOP_WITHIN
    assert answer.code == 503, answer
    assert "shutting down" in answer.json()["error"]
    assert os.listdir(server.config.data_dir / "images") == [".staging"]


@pytest_twisted.ensureDeferred
async def test_bad_input_is_400_and_creates_nothing(server):
    for body, field in [
        ({}, "Name"),
        ({"Name": ""}, "Name"),
        ({"Name": "x", "Type": "machine"}, "Type"),
        ({"Name": "x", "DiskCompressionStrategy": "xz"}, "DiskCompressionStrategy"),
        ({"Name": "x", "ImageFileType": "vmdk"}, "ImageFileType"),
        ({"Name": "x", "Filesystem": "ntfs"}, "Filesystem"),
        ({"Name": "x", "Size": 10}, "Size"),
        ({"Name": "x", "Size": "big"}, "Size"),
    ]:
        r = await server.admin.post("/image", body)
        assert r.code == 400, body
        assert r.json()["error"].startswith(field), (body, r.json())
    assert (await server.admin.get("/user/admin/images")).json() == []
    assert os.listdir(server.config.data_dir / "images") == [".staging"]


@pytest_twisted.ensureDeferred
async def test_owner_and_listing(server):
    alice = await server.user("alice")
    mod = await server.user("mod", "moderator")
    mine = (await alice.post("/image", {"Name": "a", "Size": MIB})).json()
    assert mine["Username"] == "alice"
    r = await alice.post("/image", {"Name": "b", "Size": MIB, "Owner": "mod"})
    assert r.code == 403
    r = await mod.post("/image", {"Name": "for-alice", "Size": MIB, "Owner": "alice"})
    assert r.code == 201 and r.json()["Username"] == "alice"
    r = await mod.post("/user/alice/image", {"Name": "a", "Size": MIB})
    assert r.code == 201
    listed = (await alice.get("/user/alice/images")).json()
    assert sorted(i["Name"] for i in listed) == ["a", "a", "for-alice"]
    by_name = (await alice.get("/user/alice/images/a")).json()
    assert len(by_name) == 2 and all(i["Name"] == "a" for i in by_name)
    bob = await server.user("bob")
    assert (await bob.get(f"/image/{mine['UUID']}")).code == 403
    assert (await bob.get("/user/alice/images")).code == 403


@pytest_twisted.ensureDeferred
async def test_update_and_delete_removes_files(server):
    image = (await server.admin.post("/image", {"Name": "a", "Size": MIB})).json()
    r = await server.admin.put(f"/image/{image['UUID']}", {"Name": "renamed", "Type": "system"})
    assert (r.json()["Name"], r.json()["Type"]) == ("renamed", "system")
    r = await server.admin.put(f"/image/{image['UUID']}", {"Filesystem": "ext4"})
    assert r.code == 400
    r = await server.admin.delete(f"/image/{image['UUID']}")
    assert r.code == 200 and r.text.strip() == "Successfully deleted image"
    assert not (server.config.data_dir / "images" / image["UUID"]).exists()
    assert (await server.admin.get(f"/image/{image['UUID']}")).code == 404
    assert (await server.admin.delete(f"/image/{image['UUID']}")).code == 404


@pytest_twisted.ensureDeferred
async def test_machine_gets_an_ext4_machine_image(server):
    require_tool("mkfs.ext4", "e2fsprogs")
    m = (
        await server.admin.post("/machine", {"Name": "m", "MacAddresses": ["52:54:00:00:00:01"]})
    ).json()
    image = (await server.admin.get(f"/image/{m['ImageUUID']}")).json()
    assert image["Type"] == "machine" and image["Filesystem"] == "ext4"
    assert image["Versions"][0]["Version"] == 0
    assert (await server.admin.delete(f"/image/{m['ImageUUID']}")).code == 409
    await server.admin.delete("/machine/52:54:00:00:00:01")
    assert not (server.config.data_dir / "images" / m["ImageUUID"]).exists()


# -- versions: replacing, frozen versions, empty uploads ----------------------

REPLACE = {**OCTETS, "X-BAAS-NewVersion": "false"}


def version_files(server, image: str) -> list[str]:
    return sorted(os.listdir(server.config.data_dir / "images" / image))


@pytest_twisted.ensureDeferred
async def test_a_version_frozen_in_a_setup_cannot_be_replaced(server):
    alice = await server.user("alice")
    image = await new_image(alice)
    v1 = b"frozen" * 1000
    assert await upload_version(alice, image, v1) == 1
    setup = await new_setup(alice, "alice", [{"UUID": image, "Version": 1}], name="web")
    assert entries(setup) == [{"UUID": image, "Version": 1, "Update": False}]
    before = (await alice.get(f"/image/{image}")).json()

    r = await alice.request("POST", f"/image/{image}", data=b"other" * 1000, headers=REPLACE)
    assert r.code == 409, r.text
    assert "setup 'web'" in r.json()["error"] and "version 1" in r.json()["error"]
    assert (await alice.get(f"/image/{image}")).json() == before
    assert (await alice.get(f"/image/{image}/1")).body == v1
    assert version_files(server, image) == ["0.img", "1.img"]

    # A new version is fine, and the latest (2, in no setup) may be replaced.
    assert await upload_version(alice, image, b"v2" * 1000) == 2
    r = await alice.request("POST", f"/image/{image}", data=b"v2 again", headers=REPLACE)
    assert r.code == 200, r.text
    assert (await alice.get(f"/image/{image}/2")).body == b"v2 again"
    [replaced] = [f for f in version_files(server, image) if f.startswith("2")]
    assert replaced != "2.img"
    assert version_files(server, image) == ["0.img", "1.img", replaced]


@pytest_twisted.ensureDeferred
async def test_an_empty_upload_is_400_and_stores_nothing(server):
    image = await new_image(server.admin)
    before = (await server.admin.get(f"/image/{image}")).json()
    for headers in (OCTETS, REPLACE):
        r = await server.admin.request("POST", f"/image/{image}", data=b"", headers=headers)
        assert r.code == 400, r.text
        assert "empty" in r.json()["error"]
    body, headers = multipart({"file": ("disk.img", b"")})
    r = await server.admin.request("POST", f"/image/{image}", data=body, headers=headers)
    assert r.code == 400, r.text
    assert (await server.admin.get(f"/image/{image}")).json() == before
    assert version_files(server, image) == ["0.img"]
    staging = server.config.data_dir / "images" / ".staging"
    await eventually(lambda: os.listdir(staging) == [])
