"""Deploys: the image written byte for byte whatever its compression, the
completion and the logs pxed keeps of it."""

from __future__ import annotations

import gzip

import pytest
import pytest_twisted
import zstandard

from tests.agent.conftest import data, disk_file, sha256
from tests.helpers import MIB

RAW = data(3 * MIB + 12345, seed=7) + bytes(2 * MIB) + b"some text\n" * 50000


def stored(raw: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(raw[: len(raw) // 2]) + gzip.compress(raw[len(raw) // 2 :])
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(raw)
    return raw


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
@pytest_twisted.ensureDeferred
async def test_a_deploy_writes_the_image_byte_for_byte(machine_with, tmp_path, compression):
    machine, [(uuid, version)] = await machine_with(
        [(stored(RAW, compression), compression, False)]
    )
    disk = disk_file(tmp_path / "disk0", 16 * MIB, b"\xaa" * 16 * MIB)

    run = await machine.agent([disk])

    assert run.code == 0, run.output
    content = disk.read_bytes()
    assert sha256(content[: len(RAW)]) == sha256(RAW)
    # Past the image the disk is as it was, and it is still the disk's size.
    assert content[len(RAW) :] == b"\xaa" * (16 * MIB - len(RAW)) and len(content) == 16 * MIB
    work = await machine.work()
    assert work["State"] == "deployed", run.output
    done = work["Ends"][0]
    assert done["Action"] == "queue.done" and "deployed 1 image(s) in" in done["Detail"]
    logs = await machine.logs()
    deployed = [m for m in logs if m.startswith(f"deployed {uuid} v{version}: {len(RAW)} bytes in")]
    assert deployed and "MB/s" in deployed[0] and "sha256 verified" in deployed[0], logs
    events = (await machine.server.admin.get(f"/machine/{machine.mac}/events")).json()
    assert any(e["Action"] == "work.image-written" for e in events)
    assert work["Machine"]["Progress"] is None, "no work left"


@pytest_twisted.ensureDeferred
async def test_images_go_to_disks_in_order_and_disks_beyond_them_are_left_alone(
    machine_with, tmp_path
):
    first, second = data(MIB, seed=1), data(2 * MIB, seed=2)
    machine, _ = await machine_with(
        [(first, "none", False), (zstandard.ZstdCompressor().compress(second), "zstd", False)]
    )
    disks = [disk_file(tmp_path / f"disk{i}", 4 * MIB, b"\x55" * 4 * MIB) for i in range(3)]

    run = await machine.agent(disks)

    assert run.code == 0, run.output
    assert disks[0].read_bytes()[:MIB] == first
    assert disks[1].read_bytes()[: 2 * MIB] == second
    assert disks[2].read_bytes() == b"\x55" * 4 * MIB
    assert "deployed 2 image(s) in" in (await machine.work())["Ends"][0]["Detail"]
