"""Growing an image's last partition and its filesystem to fill the disk,
for images that ask for it (``Grow``): an 8 GiB image on a 2 TB disk
otherwise leaves the rest unused.

The GPT is read back, its backup header moved to the disk's real end and
the partition that ends last extended to the end (less *reserve*, the room
the cloud-init seed takes after it); the kernel re-reads the table and the
filesystem is grown in its partition (or, where no partition node comes,
on a loop device over it): ext2/3/4 with e2fsprogs' e2fsck and resize2fs,
which grow an unmounted filesystem.  XFS and btrfs grow only mounted
(xfs_growfs, btrfs filesystem resize), with tools and kernel modules the
management OS does not carry: such a partition is grown and the work says
the filesystem was not (cloud-init's resize_rootfs or a first-boot
``xfs_growfs /`` finish it).  The image stays written and verified
whatever fails here; the failure says so."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass, replace

from pxed.agent import gpt
from pxed.agent.errors import Failed
from pxed.agent.facts import Disk

BLKRRPART = 0x125F


@dataclass(frozen=True)
class Grown:
    partition: int
    old_size: int
    new_size: int
    filesystem: str
    note: str = ""


def filesystem(fd: int, offset: int) -> str:
    """ext, xfs, btrfs or "" (unknown), by the superblock's magic."""
    if os.pread(fd, 2, offset + 1024 + 56) == b"\x53\xef":
        return "ext"
    if os.pread(fd, 4, offset) == b"XFSB":
        return "xfs"
    if os.pread(fd, 8, offset + 0x10040) == b"_BHRfS_M":
        return "btrfs"
    return ""


def partition_path(disk: str, number: int) -> str:
    # sda -> sda1, nvme0n1/loop0/mmcblk0 -> nvme0n1p1
    return f"{disk}{'p' if disk[-1].isdigit() else ''}{number}"


def grow(disk: Disk, reserve: int = 0, wait: float = 5.0) -> Grown:
    fd = os.open(disk.path, os.O_RDWR | os.O_CLOEXEC)
    try:
        block = stat.S_ISBLK(os.fstat(fd).st_mode)
        total = os.lseek(fd, 0, os.SEEK_END) // gpt.SECTOR
        try:
            table = gpt.read(fd)
        except gpt.GPTError as e:
            raise Failed(f"cannot grow {disk.path}: {e}") from None
        if table is None or not table.partitions:
            raise Failed(f"cannot grow {disk.path}: its image has no GPT partitions")
        slot, last = max(
            ((i, p) for i, p in enumerate(table.slots) if p is not None), key=lambda s: s[1].last
        )
        end = gpt.tail_start(total, reserve) - 1
        kind = filesystem(fd, last.first * gpt.SECTOR)
        old = (last.last - last.first + 1) * gpt.SECTOR
        if end <= last.last:
            return Grown(slot + 1, old, old, kind, "the disk has no room to grow into")
        slots = list(table.slots)
        slots[slot] = last._replace(last=end)
        gpt.write(fd, total, replace(table, slots=tuple(slots)))
        os.fsync(fd)
        if block:
            _reread(fd, disk.path)
    finally:
        os.close(fd)
    new = (end - last.first + 1) * gpt.SECTOR
    if kind != "ext":
        what = kind or "an unknown filesystem"
        return Grown(slot + 1, old, new, kind, f"{what}: grown on first boot, not here")
    node = partition_path(disk.path, slot + 1) if block else None
    deadline = time.monotonic() + wait
    while node is not None and not os.path.exists(node):
        if time.monotonic() > deadline:
            node = None  # a kernel without partition support: see below
            break
        time.sleep(0.1)
    if node is not None:
        _resize(node)
    else:
        # A disk that is a file (on a host), or no partition node: a loop
        # device over exactly the partition.
        loop = _run(
            [
                "losetup", "--find", "--show",
                f"--offset={last.first * gpt.SECTOR}", f"--sizelimit={new}", disk.path,
            ],
            ok=(0,),
        ).strip()  # fmt: skip
        try:
            _resize(loop)
        finally:
            _run(["losetup", "--detach", loop], ok=(0,))
    return Grown(slot + 1, old, new, "ext")


def _resize(node: str) -> None:
    # resize2fs wants a filesystem checked since it was last mounted.
    _run(["e2fsck", "-f", "-p", node], ok=(0, 1))  # 1: it corrected something
    _run(["resize2fs", node], ok=(0,))


def _run(command: list[str], ok: tuple[int, ...]) -> str:
    path = shutil.which(command[0]) or shutil.which(command[0], path="/usr/sbin:/sbin")
    if path is None:
        raise Failed(f"{command[0]} is not in the management OS")
    done = subprocess.run([path, *command[1:]], capture_output=True, text=True, timeout=3600)
    if done.returncode not in ok:
        lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
        raise Failed(f"{' '.join(command)}: {lines[-1]}")
    return done.stdout


def _reread(fd: int, path: str) -> None:
    """Have the kernel read the new table (its partition nodes follow)."""
    for _ in range(10):
        try:
            fcntl.ioctl(fd, BLKRRPART)
            return
        except OSError as e:
            error = e
            time.sleep(0.2)  # EBUSY while udev or a probe holds it
    raise Failed(f"the kernel did not re-read {path}'s partition table: {error}")
