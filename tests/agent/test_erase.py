"""Erasing disks between users (BootInform's Erase, pxed/agent/erase.py):
disks that are files holding a GPT with ext4, an MBR with logical
partitions and a whole-disk filesystem, checked afterwards with blkid's
low-level probe (``blkid -p``) at every place a table or a filesystem was."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import pytest_twisted

from tests.agent.conftest import Machine, data, disk_file, machine_token
from tests.helpers import MAC, MIB, enqueue, missing, require_tool

SIZE = 32 * MIB
RAW = data(MIB, seed=7)


def sfdisk(path: Path, script: str) -> list[dict]:
    """*path* partitioned by *script*; its partitions as sfdisk lists them."""
    tool = require_tool("sfdisk", "fdisk")
    subprocess.run([tool, "--quiet", str(path)], input=script, text=True, check=True)
    listed = subprocess.run([tool, "--json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(listed.stdout)["partitiontable"]["partitions"]


def mkfs(path: Path, offset: int = 0, size: int | None = None) -> None:
    """An ext4 filesystem at *offset* of *path* (the whole file by default)."""
    tool = require_tool("mke2fs", "e2fsprogs")
    args = [tool, "-q", "-t", "ext4", "-F", "-E", f"offset={offset}", str(path)]
    if size is not None:
        args.append(f"{size // 1024}k")
    subprocess.run(args, check=True, capture_output=True)


def found(path: Path, offset: int = 0) -> str:
    """What blkid's probe finds at *offset* of *path* ('' for nothing)."""
    tool = require_tool("blkid", "util-linux")
    r = subprocess.run(
        [tool, "-p", "-o", "export", "-O", str(offset), str(path)], capture_output=True, text=True
    )
    return r.stdout.strip() if r.returncode == 0 else ""


def gpt_disk(path: Path) -> list[int]:
    """A GPT disk with two ext4 partitions; where they start (bytes)."""
    disk_file(path, SIZE)
    parts = sfdisk(path, "label: gpt\n1: start=2048, size=16384, type=linux\n2: type=linux\n")
    starts = [p["start"] * 512 for p in parts]
    for p, start in zip(parts, starts, strict=True):
        mkfs(path, start, p["size"] * 512)
    return starts


def mbr_disk(path: Path) -> list[int]:
    """An MBR disk: a primary and, in an extended partition, two logical
    partitions, each with ext4; where they start (bytes)."""
    disk_file(path, SIZE)
    parts = sfdisk(
        path,
        "label: dos\n1: start=2048, size=16384, type=83\n2: type=5\n"
        "5: size=16384, type=83\n6: type=83\n",
    )
    usable = [p for p in parts if p["type"] != "5"]
    for p in usable:
        mkfs(path, p["start"] * 512, p["size"] * 512)
    return [p["start"] * 512 for p in usable]


def whole_disk(path: Path) -> None:
    disk_file(path, SIZE)
    mkfs(path)


def leftovers(disks: dict[Path, list[int]]) -> dict[str, str]:
    """Whatever blkid still finds at a disk's start or an old partition's."""
    return {
        f"{path.name}@{offset}": what
        for path, offsets in disks.items()
        for offset in [0, *offsets]
        if (what := found(path, offset))
    }


@pytest.fixture
def old_disks(tmp_path) -> tuple[list[Path], dict[Path, list[int]]]:
    """Three disks the last user left: GPT + ext4 (the image's target), MBR
    with logical partitions, a whole-disk ext4."""
    paths = [tmp_path / "gpt", tmp_path / "mbr", tmp_path / "whole"]
    layout = {paths[0]: gpt_disk(paths[0]), paths[1]: mbr_disk(paths[1])}
    whole_disk(paths[2])
    layout[paths[2]] = []
    assert len(leftovers(layout)) == 8, "the old disks do hold tables and filesystems"
    return paths, layout


def erase_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e["Action"].startswith("machine.erase")]


@pytest_twisted.ensureDeferred
async def test_a_new_users_work_leaves_no_table_or_filesystem_on_any_disk(machine_with, old_disks):
    paths, layout = old_disks
    machine, _ = await machine_with([(RAW, "none", False)], erase="metadata")

    run = await machine.agent(paths)

    assert run.code == 0, run.output
    assert paths[0].read_bytes()[: len(RAW)] == RAW, "the image is written after the erase"
    assert leftovers(layout) == {}
    assert all(p.stat().st_size == SIZE for p in paths)
    done = (await machine.work())["Ends"][0]["Detail"]
    assert "3 disk(s) erased (metadata)" in done
    events = erase_events((await machine.server.admin.get(f"/machine/{MAC}/events")).json())
    actions = [e["Action"] for e in events]
    # The server's decision, the agent's announcement and one per disk.
    assert actions.count("machine.erase") == 1 and actions.count("machine.erase.step") == 4
    details = " | ".join(e["Detail"] for e in events)
    assert "erased " + str(paths[1]) + " (metadata)" in details
    # The MBR's primary, extended and both logical partitions.
    assert "(metadata): partition tables and signatures wiped (4 partition(s) found)" in details


@pytest_twisted.ensureDeferred
async def test_the_same_users_next_work_erases_nothing(server, machine_with, old_disks):
    paths, _ = old_disks
    machine, [(uuid, version)] = await machine_with([(RAW, "none", False)], erase="metadata")
    assert (await machine.agent(paths)).code == 0
    # The user puts a filesystem on a spare disk; their next work keeps it.
    whole_disk(paths[2])
    await enqueue(server.admin, [{"UUID": uuid, "Version": version}], user="admin", name="again")
    again = Machine(server, machine.tmp, await machine_token(server))

    run = await again.agent(paths)

    assert run.code == 0, run.output
    assert "ext4" in found(paths[2]) and "erased" not in run.output


@pytest_twisted.ensureDeferred
async def test_full_leaves_zeros_past_the_image_and_on_every_other_disk(machine_with, tmp_path):
    disks = [disk_file(tmp_path / f"d{i}", SIZE, b"\xaa" * SIZE) for i in range(2)]
    machine, _ = await machine_with([(RAW, "none", False)], erase="full")

    run = await machine.agent(disks)

    assert run.code == 0, run.output
    first = disks[0].read_bytes()
    assert first[: len(RAW)] == RAW and first[len(RAW) :].count(0) == SIZE - len(RAW)
    assert disks[1].read_bytes().count(0) == SIZE
    assert "every block zeroed" in run.output


def loop_device(backing: Path) -> str:
    if os.geteuid() != 0:
        missing("discard is tested on a loop device: run the tests as root")
    tool = require_tool("losetup", "mount")
    made = subprocess.run([tool, "--find", "--show", str(backing)], capture_output=True, text=True)
    if made.returncode != 0:
        missing(f"no loop device here: {made.stderr.strip()}")
    return made.stdout.strip()


@pytest_twisted.ensureDeferred
async def test_discard_gives_the_blocks_back_on_a_block_device_and_a_file(machine_with, tmp_path):
    backing = disk_file(tmp_path / "backing", SIZE, data(SIZE, seed=3))
    plain = disk_file(tmp_path / "plain", SIZE, data(SIZE, seed=4))
    before = backing.stat().st_blocks * 512
    loop = loop_device(backing)
    try:
        machine, _ = await machine_with([(RAW, "none", False)], erase="discard")
        run = await machine.agent([plain, Path(loop)])
    finally:
        subprocess.run([require_tool("losetup", "mount"), "-d", loop], check=True)

    assert run.code == 0, run.output
    assert plain.read_bytes()[: len(RAW)] == RAW
    # The loop device passes BLKDISCARD on as holes in its backing file.
    assert backing.stat().st_blocks * 512 < before // 8, run.output
    assert backing.read_bytes().count(0) == SIZE
    assert "every block discarded" in run.output


@pytest_twisted.ensureDeferred
async def test_an_erase_on_demand_writes_no_image_and_zeros_every_disk(
    server, machine_with, tmp_path
):
    # A machine with nothing queued: machine_with's work is cancelled.
    machine, _ = await machine_with([(RAW, "none", False)])
    [work] = (await server.admin.get(f"/machine/{MAC}/boot/queue")).json()
    assert (await server.admin.delete(f"/machine/{MAC}/boot/queue/{work['ID']}")).code == 200
    r = await server.admin.post(f"/machine/{MAC}/erase", {"Policy": "full"})
    assert r.code == 201, r.text
    assert r.json()["Erase"] == "full" or r.json()["EraseAsked"] == "full"
    disks = [disk_file(tmp_path / f"d{i}", SIZE, b"\x5a" * SIZE) for i in range(2)]
    erasing = Machine(server, machine.tmp, await machine_token(server))

    run = await erasing.agent(disks)

    assert run.code == 0, run.output
    assert all(d.read_bytes().count(0) == SIZE for d in disks)
    done = (await erasing.work())["Ends"][0]["Detail"]
    assert "deployed 0 image(s)" in done and "2 disk(s) erased (full)" in done, done
