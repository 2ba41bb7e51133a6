"""Deploys: the image written byte for byte whatever its compression, the
completion and the logs pxed keeps of it."""

from __future__ import annotations

import gzip

import pytest
import pytest_twisted
import zstandard

from tests.agent.conftest import FACTS, data, disk_file, sha256
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


def three_disks(tmp_path) -> tuple[list, dict]:
    """Three disks filled with 0x55, as the facts file describes them (kernel
    order: the spinning one first)."""
    described = [
        ("sda", "ST500DM002", "Z3T1", True),
        ("sdb", "Samsung SSD 860", "S3Z9", False),
        ("nvme0n1", "Samsung SSD 970", "S4EW", False),
    ]
    paths = [disk_file(tmp_path / name, 4 * MIB, b"\x55" * 4 * MIB) for name, *_ in described]
    disks = [
        {"Path": str(path), "Name": name, "Model": model, "Serial": serial, "Rotational": rot}
        for path, (name, model, serial, rot) in zip(paths, described, strict=True)
    ]
    return paths, {**FACTS, "Disks": disks}


@pytest_twisted.ensureDeferred
async def test_root_device_hints_pick_the_disk_instead_of_kernel_order(machine_with, tmp_path):
    image = data(MIB, seed=3)
    machine, _ = await machine_with([(image, "none", False)], hints=[{"Serial": "S4EW"}])
    paths, facts = three_disks(tmp_path)

    run = await machine.agent([], facts=facts)

    assert run.code == 0, run.output
    assert paths[2].read_bytes()[:MIB] == image
    assert paths[0].read_bytes() == paths[1].read_bytes() == b"\x55" * 4 * MIB
    assert "the one disk matching its root device hints Serial=S4EW" in run.output


@pytest.mark.parametrize(
    ("hints", "reason", "candidates"),
    [
        # No match: every disk is a candidate; two: the two.
        ({"Serial": "NOPE"}, "no disk matches", ("Z3T1", "S3Z9", "S4EW")),
        ({"Rotational": False}, "2 disks match", ("S3Z9", "S4EW")),
    ],
)
@pytest_twisted.ensureDeferred
async def test_hints_matching_no_disk_or_two_fail_the_work_writing_nothing(
    machine_with, tmp_path, hints, reason, candidates
):
    machine, _ = await machine_with([(data(MIB, seed=4), "none", False)], hints=[hints])
    paths, facts = three_disks(tmp_path)

    run = await machine.agent([], facts=facts)

    assert run.code == 1, run.output
    work = await machine.work()
    assert work["Ends"][0]["Action"] == "queue.failed"
    detail = work["Ends"][0]["Detail"]
    assert reason in detail and "nothing was written" in detail
    # The candidates, so the operator can correct the hints.
    assert all(f"serial {serial}" in detail for serial in candidates)
    assert ("serial Z3T1" in detail) == ("Z3T1" in candidates)
    assert all(p.read_bytes() == b"\x55" * 4 * MIB for p in paths)
