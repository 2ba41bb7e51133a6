"""Erasing a machine's disks between users, as BootInform's ``Erase`` says
(the policy and when it applies: pxed/erase.py).

- ``metadata``: the first and last 2 MiB of the disk and of each partition
  its GPT or MBR lists (logical partitions too), and btrfs's superblock
  copies at 64 MiB and 256 GiB into each, are zeroed.  That is where
  partition tables (MBR, both GPT headers), filesystem superblocks (ext,
  XFS, btrfs, FAT, NTFS and its backup, swap, ISO 9660), RAID (md 0.90 to
  1.2), LVM and LUKS headers and ZFS labels live: afterwards no tool finds
  a partition, a filesystem or a cloned root UUID on the disk, though the
  data blocks stay.  The same cut MAAS calls quick erase.
- ``discard``: metadata, then every block discarded (TRIM/UNMAP, the
  kernel's BLKDISCARD) where the disk supports it; where it does not, the
  metadata wipe is all, and the log says so.
- ``full``: metadata, then zeros over every block (BLKZEROOUT, which lets
  a disk that can write zeroes by itself do so), with progress.

Metadata goes first in every policy so that a machine that loses power
part way leaves nothing that mounts.  A disk the work writes an image to
is erased before the image goes on it; under ``full`` only what lies past
the image is zeroed after it is written (``zero_from``), not the whole
disk twice."""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pxed.agent.errors import Failed
from pxed.agent.facts import Disk

MiB = 1 << 20
EDGE = 2 * MiB
BTRFS_MIRRORS = (64 * MiB, 256 << 30)
SECTOR = 512
ZERO_CHUNK = 64 * MiB
DISCARD_CHUNK = 1 << 30
PROGRESS_EVERY = 10.0

BLKDISCARD = 0x1277
BLKZEROOUT = 0x127F
BLKRRPART = 0x125F
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

MBR_EXTENDED = (0x05, 0x0F, 0x85)
MBR_PROTECTIVE = 0xEE
MAX_LOGICAL = 256

Say = Callable[[str], None]


@dataclass(frozen=True)
class Erased:
    disk: str
    policy: str
    partitions: int
    seconds: float
    note: str = ""

    def describe(self) -> str:
        what = {
            "metadata": "partition tables and signatures wiped",
            "discard": "partition tables and signatures wiped, every block discarded",
            "full": "partition tables and signatures wiped, every block zeroed",
        }[self.policy]
        text = (
            f"erased {self.disk} ({self.policy}): {what} "
            f"({self.partitions} partition(s) found) in {self.seconds:.1f} s"
        )
        return f"{text}; {self.note}" if self.note else text


def erase(disk: Disk, policy: str, say: Say) -> Erased:
    if policy not in ("metadata", "discard", "full"):
        raise Failed(f"Erase: unknown policy {policy!r}; nothing was erased")
    started = time.monotonic()
    try:
        fd = os.open(disk.path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise Failed(f"cannot open {disk.path} to erase it: {e.strerror or e}") from None
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        block = stat.S_ISBLK(os.fstat(fd).st_mode)
        found = partitions(fd, size)
        _zero_regions(fd, disk.path, metadata_regions(size, found))
        note = ""
        if policy == "discard":
            note = _discard(fd, disk.path, size, block, say)
        elif policy == "full":
            _zero_range(fd, disk.path, 0, size, block, say)
        os.fsync(fd)
        if block:
            _forget_partitions(fd)
    except OSError as e:
        raise Failed(f"erasing {disk.path} failed: {e.strerror or e}") from None
    finally:
        os.close(fd)
    return Erased(disk.path, policy, len(found), time.monotonic() - started, note)


def zero_from(disk: Disk, offset: int, say: Say) -> None:
    """Zeros from *offset* (where an image written under ``full`` ends) to
    the disk's end."""
    fd = os.open(disk.path, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        block = stat.S_ISBLK(os.fstat(fd).st_mode)
        _zero_range(fd, disk.path, offset, size - offset, block, say)
        os.fsync(fd)
    except OSError as e:
        raise Failed(f"zeroing {disk.path} past its image failed: {e.strerror or e}") from None
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# Where the metadata is


def partitions(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) in bytes of every partition the disk's GPT (primary
    or backup header, checksums not required: a damaged table's partitions
    are erased as well) or MBR lists, clamped to the disk."""
    found = _gpt_partitions(fd, size)
    if found is None:
        found = _mbr_partitions(fd, size)
    return [(o, min(n, size - o)) for o, n in found if 0 <= o < size and n > 0]


def metadata_regions(size: int, parts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The regions to zero, merged and in order."""
    wanted: list[tuple[int, int]] = []
    for offset, length in [(0, size), *parts]:
        wanted.append((offset, min(EDGE, length)))
        wanted.append((max(offset, offset + length - EDGE), min(EDGE, length)))
        for mirror in BTRFS_MIRRORS:
            if mirror + 4096 <= length:
                wanted.append((offset + mirror, 4096))
    merged: list[tuple[int, int]] = []
    for start, length in sorted(wanted):
        end = min(start + length, size)
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        elif end > start:
            merged.append((start, end))
    return [(s, e - s) for s, e in merged]


def _gpt_partitions(fd: int, size: int) -> list[tuple[int, int]] | None:
    for lba in (1, size // SECTOR - 1):
        header = os.pread(fd, 92, lba * SECTOR)
        if len(header) < 92 or header[:8] != b"EFI PART":
            continue
        entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
        if not 128 <= entry_size <= 4096 or count * entry_size > MiB:
            continue
        table = os.pread(fd, count * entry_size, entries_lba * SECTOR)
        found = []
        for i in range(len(table) // entry_size):
            entry = table[i * entry_size : i * entry_size + 128]
            if entry[:16] == bytes(16):
                continue
            first, last = struct.unpack_from("<QQ", entry, 32)
            if last >= first:
                found.append((first * SECTOR, (last - first + 1) * SECTOR))
        return found
    return None


def _mbr_partitions(fd: int, size: int) -> list[tuple[int, int]]:
    mbr = os.pread(fd, SECTOR, 0)
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        return []
    found = []
    for kind, start, count in _mbr_entries(mbr):
        if kind == MBR_PROTECTIVE:
            continue
        found.append((start * SECTOR, count * SECTOR))
        if kind in MBR_EXTENDED:
            found += _logical(fd, start, size)
    return found


def _mbr_entries(sector: bytes) -> Iterator[tuple[int, int, int]]:
    for i in range(4):
        entry = sector[446 + 16 * i : 446 + 16 * (i + 1)]
        kind = entry[4]
        start, count = struct.unpack_from("<II", entry, 8)
        if kind and count:
            yield kind, start, count


def _logical(fd: int, extended: int, size: int) -> list[tuple[int, int]]:
    """The logical partitions in the extended partition at *extended*
    (sectors): a chain of boot records, each naming one and the next."""
    found = []
    here = extended
    for _ in range(MAX_LOGICAL):
        if here * SECTOR >= size:
            break
        ebr = os.pread(fd, SECTOR, here * SECTOR)
        if ebr[510:512] != b"\x55\xaa":
            break
        entries = list(_mbr_entries(ebr))
        following = None
        for kind, start, count in entries:
            if kind in MBR_EXTENDED:
                following = extended + start
            else:
                found.append(((here + start) * SECTOR, count * SECTOR))
        if following is None or following <= here:
            break
        here = following
    return found


# ---------------------------------------------------------------------------
# Zeroing, discarding


def _zero_regions(fd: int, path: str, regions: list[tuple[int, int]]) -> None:
    zeros = bytes(EDGE)
    for offset, length in regions:
        done = 0
        while done < length:
            n = os.pwrite(fd, zeros[: min(len(zeros), length - done)], offset + done)
            if n <= 0:
                raise Failed(f"erasing {path}: a write at {offset + done} wrote nothing")
            done += n


class _Progress:
    """A log line every PROGRESS_EVERY seconds while a long pass runs."""

    def __init__(self, say: Say, what: str, total: int) -> None:
        self.say = say
        self.what = what
        self.total = total
        self.started = self.last = time.monotonic()

    def at(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        rate = done / max(now - self.started, 0.01) / 1e6
        self.say(
            f"{self.what}: {done / 1e9:.1f} of {self.total / 1e9:.1f} GB "
            f"({100 * done // max(self.total, 1)}%), {rate:.1f} MB/s"
        )


def _zero_range(fd: int, path: str, offset: int, length: int, block: bool, say: Say) -> None:
    progress = _Progress(say, f"zeroing {path}", length)
    done = 0
    while done < length:
        n = min(ZERO_CHUNK, length - done)
        if block:
            fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", offset + done, n))
        else:
            _zero_regions(fd, path, [(offset + done, n)])
        done += n
        progress.at(done)


def _discard(fd: int, path: str, size: int, block: bool, say: Say) -> str:
    """Every block discarded; "" or why not."""
    progress = _Progress(say, f"discarding {path}", size)
    done = 0
    while done < size:
        n = min(DISCARD_CHUNK, size - done)
        try:
            if block:
                fcntl.ioctl(fd, BLKDISCARD, struct.pack("QQ", done, n))
            else:
                _punch(fd, done, n)
        except OSError as e:
            if done == 0 and e.errno in (95, 22, 25):  # EOPNOTSUPP, EINVAL, ENOTTY
                return f"{path} does not support discard: the metadata wipe is all"
            raise
        done += n
        progress.at(done)
    return ""


def _punch(fd: int, offset: int, length: int) -> None:
    """A disk that is a file: its blocks given back to the filesystem."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    if libc.fallocate(fd, mode, offset, length) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _forget_partitions(fd: int) -> None:
    """The kernel drops the partitions it knew (the table is gone); a
    disk in use keeps them until it is free, which is harmless here."""
    try:
        fcntl.ioctl(fd, BLKRRPART)
    except OSError:
        pass
