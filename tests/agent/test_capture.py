"""Captures: the disk read whole, compressed as the image says, stored as
a new version whose content is the disk; a read that fails mid-way aborts
the upload and pxed stores nothing."""

from __future__ import annotations

import gzip
import os
import threading

import pytest
import pytest_twisted
import zstandard
from twisted.internet import threads

from tests.agent.conftest import data, disk_file, sha256
from tests.helpers import MIB


def unpack(blob: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.decompress(blob)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    return blob


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
@pytest_twisted.ensureDeferred
async def test_a_capture_stores_the_disk_as_a_new_version(
    machine_with, server, tmp_path, compression
):
    original = data(MIB, seed=5)
    deployed = original if compression == "none" else None
    machine, [(uuid, _)] = await machine_with([(deployed, compression, True)])
    content = data(3 * MIB, seed=6) + bytes(2 * MIB) + b"captured text " * 30000
    disk = disk_file(tmp_path / "disk", 6 * MIB, content)
    before = disk.read_bytes()

    run = await machine.agent([disk])

    assert run.code == 0, run.output
    versions = (await server.admin.get(f"/image/{uuid}")).json()["Versions"]
    captured = [v for v in versions if v["Origin"] == "capture"]
    assert len(captured) == 1, versions
    stored = (await server.admin.get(f"/image/{uuid}/{captured[0]['Version']}")).body
    assert sha256(stored) == captured[0]["Sha256"]
    assert unpack(stored, compression) == before
    if compression == "none":
        assert captured[0]["Sha256"] == sha256(before) and captured[0]["Size"] == 6 * MIB
    else:
        assert captured[0]["Size"] < 6 * MIB
    logs = await machine.logs()
    assert any(m.startswith(f"captured {uuid} v{captured[0]['Version']}: ") for m in logs), logs
    # The disk then gets the version the setup froze, captured first.
    assert (await machine.work())["State"] == "deployed"


@pytest_twisted.ensureDeferred
async def test_a_capture_whose_disk_read_fails_mid_way_stores_no_version(
    machine_with, server, tmp_path
):
    machine, [(uuid, _)] = await machine_with([(None, "none", True)])
    # A disk that says it holds 8 MiB and ends after 3: the test feeds it.
    fifo = tmp_path / "disk.fifo"
    os.mkfifo(fifo)
    facts = {**machine.facts, "Disks": [{"Path": str(fifo), "Size": 8 * MIB}]}

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(data(3 * MIB, seed=8))

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    run = await machine.agent([], facts=facts)
    await threads.deferToThread(feeder.join, 10)

    assert run.code == 1, run.output
    versions = (await server.admin.get(f"/image/{uuid}")).json()["Versions"]
    assert [v["Origin"] for v in versions] == ["created"], versions
    work = await machine.work()
    assert work["State"] == "failed"
    detail = work["Ends"][0]["Detail"]
    assert f"capturing image img0 ({uuid}) from {fifo}" in detail
    assert "upload aborted (nothing stored)" in detail and f"ended after {3 * MIB}" in detail
    staging = server.config.data_dir / "images" / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []
