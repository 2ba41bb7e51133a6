"""Growing an image's last partition and filesystem to its disk (a file:
the agent grows the filesystem on a loop device over the partition, as it
does where the kernel gives no partition node), checked with sfdisk and
dumpe2fs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import pytest_twisted

from tests.helpers import MIB, missing, require_tool


def run(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def ext4_image(path: Path, size: int) -> None:
    """A GPT image whose last partition (2) holds an ext4 filesystem with
    a file on it."""
    with open(path, "wb") as f:
        f.truncate(size)
    sfdisk = require_tool("sfdisk", "fdisk")
    subprocess.run(
        [sfdisk, "--quiet", str(path)],
        input="label: gpt\n1: start=2048, size=2048, type=uefi\n2: start=4096, type=linux\n",
        text=True, check=True,
    )  # fmt: skip
    part = json.loads(run(sfdisk, "--json", str(path)))["partitiontable"]["partitions"][1]
    mkfs = require_tool("mke2fs", "e2fsprogs")
    run(mkfs, "-q", "-t", "ext4", "-F", "-E", f"offset={part['start'] * 512}", str(path),
        f"{part['size'] // 2}k")  # fmt: skip


@pytest.fixture
def disk(tmp_path) -> Path:
    """A 64 MiB disk; the filesystem is grown on a loop device (root)."""
    if os.geteuid() != 0:
        missing("growing uses a loop device: run the tests as root")
    require_tool("losetup", "mount")
    path = tmp_path / "disk"
    with open(path, "wb") as f:
        f.truncate(64 * MIB)
    return path


def sizes(disk: Path) -> tuple[int, int]:
    """(the last partition's size, its ext4 filesystem's size), bytes."""
    table = json.loads(run(require_tool("sfdisk", "fdisk"), "--json", str(disk)))
    return sizes_of(disk, table["partitiontable"]["partitions"][-1])


def sizes_of(disk: Path, last: dict) -> tuple[int, int]:
    part = disk.parent / "partition"
    with open(disk, "rb") as src, open(part, "wb") as dst:
        src.seek(last["start"] * 512)
        dst.write(src.read(4 * MIB))  # the superblock and group descriptors
    header = run(require_tool("dumpe2fs", "e2fsprogs"), "-h", str(part))
    fields = dict(line.split(":", 1) for line in header.splitlines() if ":" in line)
    blocks = int(fields["Block count"]) * int(fields["Block size"])
    return last["size"] * 512, blocks


@pytest_twisted.ensureDeferred
async def test_an_image_that_asks_is_grown_to_its_disk(server, machine_with, tmp_path, disk):
    built = tmp_path / "image"
    ext4_image(built, 16 * MIB)
    machine, [(uuid, _)] = await machine_with([(built.read_bytes(), "none", False)])
    assert (await server.admin.put(f"/image/{uuid}", {"Grow": True})).json()["Grow"] is True

    run_ = await machine.agent([disk])

    assert run_.code == 0, run_.output
    assert "grew partition 2 of" in run_.output and "ext too" in run_.output
    partition, filesystem = sizes(disk)
    # From its start at 2 MiB to the disk's last whole MiB (after it: the
    # backup GPT), and the filesystem with it.
    assert partition == 61 * MIB
    assert 60 * MIB < filesystem <= partition
    assert "No errors detected" in run(require_tool("sfdisk", "fdisk"), "--verify", str(disk))


@pytest_twisted.ensureDeferred
async def test_without_grow_the_image_keeps_its_size(server, machine_with, tmp_path, disk):
    built = tmp_path / "image"
    ext4_image(built, 16 * MIB)
    machine, _ = await machine_with([(built.read_bytes(), "none", False)])

    run_ = await machine.agent([disk])

    assert run_.code == 0, run_.output
    assert "grew" not in run_.output
    partition, filesystem = sizes(disk)
    assert partition < 16 * MIB and filesystem < 16 * MIB


@pytest_twisted.ensureDeferred
async def test_grown_with_a_seed_the_partition_stops_where_the_seed_begins(
    server, machine_with, tmp_path, disk
):
    built = tmp_path / "image"
    ext4_image(built, 16 * MIB)
    machine, [(uuid, _)] = await machine_with([(built.read_bytes(), "none", False)])
    await server.admin.put(f"/image/{uuid}", {"Grow": True, "CloudInit": True})

    run_ = await machine.agent([disk])

    assert run_.code == 0, run_.output
    table = json.loads(run(require_tool("sfdisk", "fdisk"), "--json", str(disk)))
    root, seed = sorted(table["partitiontable"]["partitions"], key=lambda p: p["start"])[1:]
    assert seed["name"] == "cidata" and root["start"] + root["size"] == seed["start"]
    assert (seed["start"] + seed["size"]) * 512 == 63 * MIB
    assert 59 * MIB < sizes_of(disk, root)[1] <= 60 * MIB
