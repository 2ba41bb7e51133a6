"""The cloud-init seed partition the agent adds at the end of the boot disk,
checked with Debian's own tools (sfdisk, blkid, mtools), not with the code
that wrote it."""

from __future__ import annotations

import json
import subprocess

import pytest
import pytest_twisted

from pxed.agent import seed
from pxed.agent.errors import Failed
from pxed.agent.facts import Disk
from tests.agent.conftest import disk_file
from tests.helpers import MIB, require_tool

BOOT_CODE = b"\xeb\x63\x90GRUB-like boot code"


def sfdisk(*args: str, input: str | None = None) -> str:
    tool = require_tool("sfdisk", "fdisk")
    return subprocess.run(
        [tool, *args], input=input, capture_output=True, text=True, check=True
    ).stdout


def gpt_image(path, size: int) -> None:
    """A GPT image of two partitions in slots 1 and 3 (slot 2 empty), boot
    code in its first sector, as a user's disk image may be."""
    with open(path, "wb") as f:
        f.truncate(size)
    sfdisk(
        "--quiet", str(path),
        input="label: gpt\n1: start=2048, size=2048, type=uefi\n"
        "3: start=4096, size=4096, type=linux\n",
    )  # fmt: skip
    with open(path, "r+b") as f:
        f.write(BOOT_CODE)


def seed_image(path) -> bytes:
    mkfs = require_tool("mkfs.fat", "dosfstools")
    subprocess.run([mkfs, "-C", "-n", "CIDATA", str(path), "1024"], check=True,
                   capture_output=True)  # fmt: skip
    (path.parent / "meta-data").write_text('{"instance-id": "i-1"}\n')
    subprocess.run(
        [require_tool("mcopy", "mtools"), "-i", str(path), str(path.parent / "meta-data"), "::/"],
        check=True,
        env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    )
    return path.read_bytes()


def table(path) -> dict:
    return json.loads(sfdisk("--json", str(path)))["partitiontable"]


def test_the_seed_goes_at_the_disk_end_and_the_image_keeps_its_partitions(tmp_path):
    disk = tmp_path / "disk"
    gpt_image(disk, 8 * MIB)
    # The image is smaller than the disk it goes to: its backup GPT is in
    # the middle until the agent moves it.
    with open(disk, "r+b") as f:
        f.truncate(32 * MIB)
    before = table(disk)["partitions"]
    image = seed_image(tmp_path / "seed.img")

    written = seed.write(Disk(str(disk), "disk", 32 * MIB), image)

    after = table(disk)
    assert [p for p in after["partitions"] if p in before] == before
    [added] = [p for p in after["partitions"] if p not in before]
    # Slot 2 was free: the seed takes it, partition 3 keeps its number.
    assert written.partition == 2 and added["node"] == f"{disk}2"
    assert added["name"] == "cidata" and added["size"] * 512 == MIB
    assert (added["start"] + added["size"]) * 512 <= 32 * MIB - 33 * 512
    assert after["lastlba"] == 32 * MIB // 512 - 34
    # sfdisk finds nothing wrong: the backup header is at the disk's end.
    assert "No errors detected" in sfdisk("--verify", str(disk))
    assert disk.read_bytes()[: len(BOOT_CODE)] == BOOT_CODE
    offset = added["start"] * 512
    probe = subprocess.run(
        [require_tool("blkid", "util-linux"), "-p", "-O", str(offset), "-o", "export", str(disk)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "LABEL=CIDATA" in probe and "TYPE=vfat" in probe
    meta = subprocess.run(
        [require_tool("mtype", "mtools"), "-i", f"{disk}@@{offset}", "::meta-data"],
        capture_output=True, text=True, check=True, env={"MTOOLS_SKIP_CHECK": "1"},
    ).stdout  # fmt: skip
    assert json.loads(meta) == {"instance-id": "i-1"}

    # A second seed replaces the first, in the same slot.
    again = seed.write(Disk(str(disk), "disk", 32 * MIB), image)
    assert again.partition == 2 and len(table(disk)["partitions"]) == 3


def test_an_mbr_image_or_a_full_disk_gets_no_seed_and_is_left_as_it_was(tmp_path):
    mbr = tmp_path / "mbr"
    with open(mbr, "wb") as f:
        f.truncate(8 * MIB)
    sfdisk("--quiet", str(mbr), input="label: dos\n,,L\n")
    untouched = mbr.read_bytes()
    with pytest.raises(Failed, match="has no GPT"):
        seed.write(Disk(str(mbr), "mbr", 8 * MIB), b"\0" * MIB)
    assert mbr.read_bytes() == untouched

    full = tmp_path / "full"
    with open(full, "wb") as f:
        f.truncate(8 * MIB)
    sfdisk("--quiet", str(full), input="label: gpt\n,,L\n")
    untouched = full.read_bytes()
    with pytest.raises(Failed, match="no room for the cloud-init seed"):
        seed.write(Disk(str(full), "full", 8 * MIB), b"\0" * MIB)
    assert full.read_bytes() == untouched


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEBu2i2P/uExF5yjGB2ciJ4cDeOeALQxl3+QlViZqYJt me@lab"


@pytest_twisted.ensureDeferred
async def test_a_cloud_init_deploy_ends_with_the_seed_on_the_boot_disk(
    server, machine_with, tmp_path
):
    built = tmp_path / "image"
    gpt_image(built, 8 * MIB)
    machine, [(uuid, _)] = await machine_with([(built.read_bytes(), "none", False)])
    assert (await server.admin.put(f"/image/{uuid}", {"CloudInit": True})).code == 200
    assert (await server.admin.post("/user/admin/keys", {"Key": KEY})).code == 201
    disk = disk_file(tmp_path / "vda", 32 * MIB)

    run = await machine.agent([disk])

    assert run.code == 0, run.output
    assert "cloud-init seed written to" in run.output
    [added] = [p for p in table(disk)["partitions"] if p.get("name") == "cidata"]
    # The image as written, but for its GPT (primary: sectors 1-33; its
    # backup, in the image's last 33 sectors, is left where it was).
    written, image = disk.read_bytes(), built.read_bytes()
    assert written[:512] == image[:512]
    assert written[34 * 512 : 8 * MIB - 33 * 512] == image[34 * 512 : 8 * MIB - 33 * 512]
    user_data = subprocess.run(
        [require_tool("mtype", "mtools"), "-i", f"{disk}@@{added['start'] * 512}", "::user-data"],
        capture_output=True, text=True, check=True, env={"MTOOLS_SKIP_CHECK": "1"},
    ).stdout  # fmt: skip
    assert KEY in user_data
    assert "No errors detected" in sfdisk("--verify", str(disk))
