"""POST /image/{uuid}/import: an image fetched over real HTTP from a server
in the test process (tests/imports/origin.py), converted by Debian's
qemu-img or python's lzma, stored as a new version; every refusal a 4xx or
a failure event, with nothing stored and nothing left in staging.  And an
upload of a qcow2 to POST /image/{uuid}, converted likewise."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import pytest_twisted
import zstandard

from tests.conftest import database_rows
from tests.helpers import MIB, Client, eventually, free_port, new_image, upload
from tests.imports.origin import DISK_SIZE, make_disks, raw_disk, serve

RAW_SHA256 = hashlib.sha256(raw_disk()).hexdigest()
# The origin listens on loopback: imports may fetch from 127.0.0.1 only
# (import_allow_private stays off, so 127.0.0.2 and the rest are refused).
SETTINGS = dict(import_allow_networks=["127.0.0.1/32"], import_max_bytes=8 * MIB)


@pytest.fixture(scope="module")
def disks(tmp_path_factory) -> dict[str, Path]:
    # Module-scoped and here: tests/imports/conftest.py's is not visible to
    # tests/web.
    return make_disks(tmp_path_factory.mktemp("disks"))


@pytest_twisted.async_yield_fixture
async def origin(disks):
    served = await serve(disks["raw"].parent)
    yield served
    await served.stop()


def staging(server) -> list[str]:
    return os.listdir(server.config.data_dir / "images" / ".staging")


async def imported(client, image: str, body: dict) -> tuple[str, str]:
    """Start an import and wait for its end: (action, detail) of its last
    event, image.import.done or image.import.failed."""
    r = await client.post(f"/image/{image}/import", body)
    assert r.code == 202, r.text
    job = r.json()["ID"]
    assert r.header("location") == f"/image/{image}/events"
    found: list[dict] = []

    async def ended() -> bool:
        events = (await client.get(f"/image/{image}/events")).json()
        found[:] = [
            e
            for e in events
            if e["Detail"].startswith(f"import={job} ")
            and e["Action"] in ("image.import.done", "image.import.failed")
        ]
        return bool(found)

    await eventually(ended, timeout=30)
    return found[0]["Action"], found[0]["Detail"]


async def versions(client, image: str) -> list[dict]:
    return (await client.get(f"/image/{image}")).json()["Versions"]


@pytest_twisted.ensureDeferred
async def test_qcow2_and_xz_imported_as_the_raw_disk(start_server, origin):
    server = await start_server(**SETTINGS)
    alice = await server.user("alice")
    image = await new_image(alice)
    for n, name in enumerate(("disk.qcow2", "disk.img.xz", "disk.img"), start=1):
        action, detail = await imported(alice, image, {"URL": origin.url(f"/files/{name}")})
        assert action == "image.import.done", detail
        assert f"version={n} " in detail
        v = (await versions(alice, image))[n]
        assert (v["Version"], v["Size"], v["Sha256"], v["Origin"]) == (
            n,
            DISK_SIZE,
            RAW_SHA256,
            "import",
        )
        r = await alice.get(f"/image/{image}/{n}")
        assert r.body == raw_disk()
    events = (await alice.get(f"/image/{image}/events")).json()
    assert any("converting qcow2 to raw" in e["Detail"] for e in events)
    started = [e for e in events if e["Action"] == "image.import"]
    assert [e["Detail"] for e in started][-1] == f"url={origin.url('/files/disk.qcow2')}"
    assert staging(server) == []


@pytest_twisted.ensureDeferred
async def test_into_a_zstd_image_the_raw_disk_is_compressed(start_server, origin, disks):
    server = await start_server(**SETTINGS)
    r = await server.admin.post("/image", {"Name": "z", "DiskCompressionStrategy": "zstd"})
    image = r.json()["UUID"]
    sha256 = hashlib.sha256(disks["qcow2"].read_bytes()).hexdigest()
    action, detail = await imported(
        server.admin, image, {"URL": origin.url("/files/disk.qcow2"), "Sha256": sha256}
    )
    assert action == "image.import.done", detail
    stored = (await server.admin.get(f"/image/{image}/1")).body
    # One frame per run of data or zeros (pxed.sparse), read as one stream.
    reader = zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=True)
    assert reader.read() == raw_disk()
    assert (await versions(server.admin, image))[1]["Sha256"] == hashlib.sha256(stored).hexdigest()
    assert staging(server) == []


@pytest_twisted.ensureDeferred
async def test_failures_are_events_and_store_nothing(start_server, origin, disks, logged):
    server = await start_server(**SETTINGS, import_timeout=2.0)
    alice = await server.user("alice")
    image = await new_image(alice)
    # 127.0.0.2 does serve the disk: only the policy keeps the import out.
    r = await Client(origin.url("", host="127.0.0.2")).get("/files/disk.img")
    assert r.body == raw_disk()
    elsewhere = origin.url("/files/disk.img", host="127.0.0.2")
    cases = [
        (
            {"URL": origin.url("/files/disk.qcow2"), "Sha256": "0" * 64},
            "sha256 mismatch: expected " + "0" * 64,
        ),
        ({"URL": origin.redirect(elsewhere)}, "127.0.0.2 is a loopback address"),
        (
            {"URL": origin.redirect("http://169.254.169.254/latest/meta-data/")},
            "169.254.169.254 is a link-local address",
        ),
        ({"URL": origin.redirect("http://10.0.0.1/disk.img")}, "10.0.0.1 is a private address"),
        ({"URL": origin.redirect("file:///etc/passwd")}, "redirected to a URL that must be"),
        ({"URL": elsewhere}, "127.0.0.2 is a loopback address"),
        ({"URL": origin.url("/endless")}, f"larger than {8 * MIB} bytes (import_max_bytes)"),
        ({"URL": origin.url("/stall")}, "timed out after 2 s (import_timeout)"),
        ({"URL": origin.url("/files/nothing")}, "answered 404"),
        ({"URL": f"http://127.0.0.1:{free_port()}/disk.img"}, "the connection was refused"),
        (
            {"URL": f"https://127.0.0.1:{origin.tls_port}/files/disk.img"},
            "TLS failed: certificate verify failed",
        ),
        (
            {"URL": origin.redirect(origin.url("/files/disk.img"), times=6)},
            "more than 5 redirects (import_max_redirects)",
        ),
        ({"URL": origin.url("/files/backed.qcow2")}, "backing file"),
    ]
    for body, why in cases:
        action, detail = await imported(alice, image, body)
        assert action == "image.import.failed", (body, detail)
        assert why in detail, (body, detail)
        assert len(await versions(alice, image)) == 1, body
        await eventually(lambda: staging(server) == [])
    # The endless body was cut off: the origin saw the connection close
    # soon after the limit, not after gigabytes.
    assert origin.endless.closed == 1
    assert origin.endless.sent < 64 * MIB
    assert "Traceback" not in str(await alice.get(f"/image/{image}/events"))
    # Each failure is a line in the log with its reason, not a stack trace
    # through pxed.  (Twisted's TLS verification logs its own, "while
    # verifying certificate", for the untrusted certificate.)
    assert not [line for line in logged if "Traceback" in line and "/pxed/" in line]
    assert sum("failed: sha256 mismatch" in line for line in logged) >= 1


@pytest_twisted.ensureDeferred
async def test_bad_requests_are_4xx_and_start_nothing(start_server, origin):
    server = await start_server(**SETTINGS)
    alice = await server.user("alice")
    bob = await server.user("bob")
    image = await new_image(alice)
    url = origin.url("/files/disk.img")
    machine = (
        await server.admin.post(
            "/machine", {"Name": "m", "MacAddresses": [{"Mac": "52:54:00:00:00:09"}]}
        )
    ).json()["ImageUUID"]
    for client, path, body, code, why in [
        (alice, image, {}, 400, "URL"),
        (alice, image, {"URL": ""}, 400, "URL"),
        (alice, image, {"URL": 5}, 400, "URL"),
        (alice, image, {"URL": "ftp://127.0.0.1/disk.img"}, 400, "http:// or https://"),
        (alice, image, {"URL": "file:///etc/passwd"}, 400, "http:// or https://"),
        (alice, image, {"URL": "http:///disk.img"}, 400, "no host"),
        (alice, image, {"URL": "http://u:p@127.0.0.1/x"}, 400, "credentials"),
        (alice, image, {"URL": url, "Sha256": "abc"}, 400, "Sha256"),
        (bob, image, {"URL": url}, 403, "owner"),
        (alice, "00000000-0000-0000-0000-000000000000", {"URL": url}, 404, "no image"),
        (server.admin, machine, {"URL": url}, 409, "machine image"),
    ]:
        r = await client.post(f"/image/{path}/import", body)
        assert r.code == code, (body, r.text)
        assert why in r.json()["error"], (body, r.text)
    r = await bob.get(f"/image/{image}/events")
    assert r.code == 403
    events = (await alice.get(f"/image/{image}/events")).json()
    assert not any(e["Action"].startswith("image.import") for e in events)
    assert len(await versions(alice, image)) == 1
    assert staging(server) == []


@pytest_twisted.ensureDeferred
async def test_a_qcow2_upload_is_stored_as_its_raw_disk(server, disks):
    image = await new_image(server.admin, size=MIB)
    qcow2 = disks["qcow2"].read_bytes()
    r = await upload(
        server.admin,
        f"/image/{image}",
        qcow2,
        {"X-Checksum-Sha256": hashlib.sha256(qcow2).hexdigest()},
    )
    assert r.code == 200, r.text
    assert (r.json()["Size"], r.json()["Sha256"]) == (DISK_SIZE, RAW_SHA256)
    assert (await server.admin.get(f"/image/{image}/1")).body == raw_disk()
    # One naming a file of the server's is refused whole.
    r = await upload(server.admin, f"/image/{image}", disks["backed"].read_bytes())
    assert r.code == 400 and "backing file" in r.json()["error"], r.text
    assert len(await versions(server.admin, image)) == 2
    await eventually(lambda: staging(server) == [])


@pytest_twisted.ensureDeferred
async def test_a_stop_fails_the_import_and_leaves_nothing(request, start_server, origin):
    server = await start_server(**SETTINGS, import_concurrency=1, import_queue=0)
    image = await new_image(server.admin)
    r = await server.admin.post(f"/image/{image}/import", {"URL": origin.url("/stall")})
    assert r.code == 202, r.text
    # One running and no room to wait: the next is told to come back.
    busy = await server.admin.post(f"/image/{image}/import", {"URL": origin.url("/stall")})
    assert busy.code == 503 and busy.header("retry-after") == "30", busy.text
    await eventually(lambda: staging(server) != [])  # the download's file
    await server.pxed.service.stopService()
    assert staging(server) == []
    again = await start_server(
        data_dir=str(server.config.data_dir), rows=database_rows(request, server), **SETTINGS
    )
    events = (await again.admin.get(f"/image/{image}/events")).json()
    failed = [e for e in events if e["Action"] == "image.import.failed"]
    assert [e["Detail"] for e in failed] == [f"import={r.json()['ID']} pxed is stopping"]
    assert [e["Action"] for e in events].count("image.import") == 1
    assert len(await versions(again.admin, image)) == 1
