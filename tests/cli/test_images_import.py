"""pxectl images import: the server fetches a qcow2 from a web server in
the test process (tests/imports/origin.py); pxectl follows the import's
events to the new version, or to the reason it failed (exit 1)."""

from __future__ import annotations

import hashlib

import pytest_twisted

from tests.cli.conftest import Pxectl, token_of
from tests.imports.origin import DISK_SIZE, make_disks, raw_disk, serve


@pytest_twisted.ensureDeferred
async def test_import_follows_to_the_version_or_the_reason(start_server, tmp_path):
    disks = make_disks(tmp_path)
    origin = await serve(tmp_path)
    try:
        server = await start_server(import_allow_networks=["127.0.0.1/32"])
        pxectl = Pxectl(server, tmp_path / "config", token_of(server.admin))
        uuid = (await pxectl.ok("images", "create", "disk")).out.strip()
        url = origin.url("/files/disk.qcow2")
        sha256 = hashlib.sha256(disks["qcow2"].read_bytes()).hexdigest()
        r = await pxectl.ok("images", "import", uuid, url, "--sha256", sha256)
        assert r.out.strip() == f"Imported version 1 of {uuid}"
        assert "converting qcow2 to raw" in r.err
        version = (await server.admin.get(f"/image/{uuid}")).json()["Versions"][1]
        assert (version["Size"], version["Sha256"]) == (
            DISK_SIZE,
            hashlib.sha256(raw_disk()).hexdigest(),
        )

        r = await pxectl("images", "import", uuid, url, "--sha256", "0" * 64)
        assert r.code == 1 and "sha256 mismatch" in r.err, r
        r = await pxectl("images", "import", uuid, origin.url("/files/disk.img", host="127.0.0.2"))
        assert r.code == 1 and "127.0.0.2 is a loopback address" in r.err, r
        r = await pxectl("images", "import", uuid, "ftp://example.org/disk.img")
        assert r.code == 1 and "400" in r.err and "http://" in r.err, r
        r = await pxectl("images", "import", uuid, url, "--no-wait", "--json")
        assert r.code == 0 and r.json()["State"] == "started", r
    finally:
        await origin.stop()
