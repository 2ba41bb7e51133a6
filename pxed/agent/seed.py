"""The cloud-init NoCloud seed: a small FAT filesystem labelled ``cidata``
(pxed makes it, with meta-data, user-data and network-config) written into
a partition the agent adds at the end of the boot disk, after the images.

A partition rather than a network datasource: the machine finds its seed
at every boot without reaching pxed or trusting the network, and without
a credential left on the disk.  At the end, so that the image's own
partitions keep their places (a later grow of the root partition stops
where the seed begins).  GPT only: an MBR disk may have no primary slot
free, and images pxed builds are GPT.  The partition table is read back
and rewritten with the seed added and the backup header at the disk's
real end (pxed/agent/gpt.py); the first sector stays as the image had it.

The seed's bytes carry the user's user-data: they are written, never
logged."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, replace

from pxed.agent import gpt
from pxed.agent.client import Client
from pxed.agent.errors import Failed
from pxed.agent.facts import Disk

# pxed's seed is 1 MiB; more is not a seed.
MAX_SEED = 4 << 20
# What the seed partition takes (pxed's seed is 1 MiB), for grow.py.
SECTORS = gpt.ALIGN
NAME = "cidata"


@dataclass(frozen=True)
class Written:
    disk: str
    partition: int  # 1-based, as the kernel names it
    size: int


def fetch(client: Client, url: str) -> bytes:
    """The seed image (small: held whole, it is written in one go)."""
    download = client.download(url, timeout=60)
    try:
        buffer = bytearray(MAX_SEED + 1)
        view = memoryview(buffer)
        got = 0
        while got <= MAX_SEED and (n := download.readinto(view[got:])):
            got += n
        if got > MAX_SEED:
            raise Failed(f"pxed's cloud-init seed is larger than {MAX_SEED} bytes")
        if not download.complete:
            raise Failed("the cloud-init seed's download ended early")
        return bytes(view[:got])
    finally:
        download.close()


def write(disk: Disk, image: bytes) -> Written:
    """Add the seed partition at the end of *disk* (replacing a seed an
    earlier deploy of the same image left) and write *image* into it."""
    sectors = -(-len(image) // gpt.SECTOR)
    sectors = -(-sectors // gpt.ALIGN) * gpt.ALIGN
    fd = os.open(disk.path, os.O_RDWR | os.O_CLOEXEC)
    try:
        total = os.lseek(fd, 0, os.SEEK_END) // gpt.SECTOR
        try:
            table = gpt.read(fd)
        except gpt.GPTError as e:
            raise Failed(f"cannot add the cloud-init seed to {disk.path}: {e}") from None
        if table is None:
            raise Failed(
                f"cannot add the cloud-init seed to {disk.path}: its image has no GPT "
                "(an MBR image gets no seed; turn the seed off for this setup)"
            )
        # An earlier seed's slot is reused, else the first free one.
        slots = [None if p is not None and p.name == NAME else p for p in table.slots]
        slot = next((i for i, p in enumerate(slots) if p is None), len(slots))
        if slot >= gpt.GPT_ENTRIES:
            raise Failed(f"no free GPT slot on {disk.path} for the cloud-init seed")
        first = gpt.tail_start(total, sectors)
        last = first + sectors - 1
        used = max((p.last for p in slots if p is not None), default=0)
        if used >= first:
            raise Failed(
                f"no room for the cloud-init seed on {disk.path}: its partitions reach "
                f"sector {used} and the seed needs {sectors} sectors before {first + sectors}"
            )
        seed = gpt.Partition(gpt.BASIC_DATA_TYPE, uuid.uuid4(), first, last, NAME)
        if slot == len(slots):
            slots.append(seed)
        else:
            slots[slot] = seed
        os.pwrite(fd, image.ljust(sectors * gpt.SECTOR, b"\0"), first * gpt.SECTOR)
        os.fsync(fd)
        gpt.write(fd, total, replace(table, slots=tuple(slots)))
        os.fsync(fd)
    finally:
        os.close(fd)
    return Written(disk.path, slot + 1, sectors * gpt.SECTOR)
