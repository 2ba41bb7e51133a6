"""The disks images go to, and writing one without ever passing its end.

Disk mapping rule: the images of a setup go, in the order BootInform lists
them, to the machine's disks in kernel name order -- each entry names its
disk by that index (``Disk``); the machine image has none and is not
written to a disk.  The disks are the whole-disk entries of /sys/block
named vd*, sd*, nvme<N>n<M>, xvd* or hd* -- never loop, ram, sr, zram, md
or dm devices, hidden NVMe multipath paths, or a disk of size 0 (a card
reader without a card).  Kernel name order sorts names shortest first,
then alphabetically, the order the kernel hands them out in: sda .. sdz,
sdaa; vda before vdb; nvme0n1 .. nvme9n1, nvme10n1.  A setup with more
images than disks fails naming both counts; disks beyond the images are
left alone.  An entry with root device hints (``DiskHints``) goes to the
one disk they match instead (hints.py).  On a host, ``--disk`` paths (or
the facts file's) are the disks, in the order given."""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from collections.abc import Callable

from pxed.agent import facts as facts_mod
from pxed.agent.facts import Disk


class DiskFull(Exception):
    """The image does not fit: nothing is written past the disk's end."""


def find(
    known: tuple[Disk, ...] | None,
    need: int,
    wait: float,
    lister: Callable[[], tuple[Disk, ...]] = facts_mod.system_disks,
) -> tuple[Disk, ...]:
    """The disks: *known* ones, else this machine's, waiting up to *wait*
    seconds for *need* of them (AHCI, NVMe and SCSI probe asynchronously)."""
    if known is not None:
        return known
    deadline = time.monotonic() + wait
    found = lister()
    while len(found) < need and time.monotonic() < deadline:
        time.sleep(1)
        found = lister()
    return found


def describe(disks: tuple[Disk, ...]) -> str:
    return ", ".join(f"{d.path} ({d.size} bytes)" for d in disks) or "none"


# Written data is handed to the kernel's writeback this often, so that the
# fsync at the end waits for the last of it, not for all of it, and the
# page cache does not fill with a disk's worth of dirty pages.
WRITEBACK_EVERY = 64 << 20


class DiskWriter:
    """Sequential writes to a disk from its start, refusing any write that
    would pass *limit* (a disk that is a file never grows)."""

    def __init__(self, fd: int, limit: int, name: str) -> None:
        self._fd = fd
        self.limit = limit
        self.name = name
        self.offset = 0
        self._handed = 0
        self._writeback: _Writeback | None = None

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        room = self.limit - self.offset
        if len(view) > room:
            # What fits goes (the disk ends as far as the image reached it).
            self._write(view[:room])
            raise DiskFull(
                f"the image is larger than {self.name} ({self.limit} bytes): "
                f"written up to the disk's end, the rest refused"
            )
        self._write(view)
        return len(view)

    def _write(self, view: memoryview) -> None:
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])
        self.offset += done
        if self.offset - self._handed >= WRITEBACK_EVERY:
            if self._writeback is None:
                self._writeback = _Writeback(self._fd)
            self._writeback.ranges.put((self._handed, self.offset - self._handed))
            self._handed = self.offset

    def close(self) -> None:
        """Wait for the writeback hand-offs (before fsync or close)."""
        if self._writeback is not None:
            self._writeback.ranges.put(None)
            self._writeback.join()
            self._writeback = None


class _Writeback(threading.Thread):
    """Hands written ranges to the kernel's writeback.  POSIX_FADV_DONTNEED
    starts writing a range's dirty pages and drops those already written;
    starting can wait for a busy disk's queue, so it is done here, not in
    the thread that writes."""

    def __init__(self, fd: int) -> None:
        super().__init__(name="writeback", daemon=True)
        self._fd = fd
        self.ranges: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self.start()

    def run(self) -> None:
        while (item := self.ranges.get()) is not None:
            try:
                os.posix_fadvise(self._fd, item[0], item[1], os.POSIX_FADV_DONTNEED)
            except OSError:
                pass  # a hint: the fsync at the end writes what is left


def open_for_writing(disk: Disk) -> tuple[int, int]:
    """(fd, the bytes that may be written): the disk's size, and for a
    file never more than the file holds now."""
    fd = os.open(disk.path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        limit = disk.size
        if stat.S_ISREG(st.st_mode):
            limit = min(limit, st.st_size) if limit else st.st_size
        elif stat.S_ISBLK(st.st_mode):
            limit = os.lseek(fd, 0, os.SEEK_END)
            os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd, limit
