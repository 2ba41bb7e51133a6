"""GPT: the protective MBR, the primary and backup headers and partition
entries.  The disk builder (pxed.builder.disk) writes a new table with it;
the agent reads the table of an image it wrote and writes it back with a
partition added and the backup moved to the disk's real end (an image
smaller than its disk leaves its backup in the middle), leaving the first
sector, which may hold a BIOS boot loader, as the image had it."""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from dataclasses import dataclass
from typing import NamedTuple

SECTOR = 512
GPT_ENTRIES = 128
GPT_ENTRY_SIZE = 128
GPT_SECTORS = 1 + GPT_ENTRIES * GPT_ENTRY_SIZE // SECTOR  # header + entries: 33

ESP_TYPE = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
ROOT_TYPE = uuid.UUID("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")  # Linux root (x86-64)
BASIC_DATA_TYPE = uuid.UUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")
_HEADER = "<8sIIIIQQQQ16sQIII"
_ENTRY = "<16s16sQQQ72s"


class Partition(NamedTuple):
    type_guid: uuid.UUID
    part_guid: uuid.UUID
    first: int  # sectors, inclusive
    last: int
    name: str
    attributes: int = 0


class GPTError(Exception):
    pass


@dataclass(frozen=True)
class Table:
    disk_guid: uuid.UUID
    # By slot, up to the last one used: a partition's number is its slot's
    # (1-based), so an empty slot stays empty (None) and numbers hold.
    slots: tuple[Partition | None, ...]

    @property
    def partitions(self) -> tuple[Partition, ...]:
        return tuple(p for p in self.slots if p is not None)


def _entries(parts: list[Partition | None]) -> bytes:
    if len(parts) > GPT_ENTRIES:
        raise GPTError(f"at most {GPT_ENTRIES} partitions")
    return b"".join(
        bytes(GPT_ENTRY_SIZE)
        if p is None
        else struct.pack(
            _ENTRY,
            p.type_guid.bytes_le,
            p.part_guid.bytes_le,
            p.first,
            p.last,
            p.attributes,
            p.name.encode("utf-16-le")[:72],
        )
        for p in parts
    ).ljust(GPT_ENTRIES * GPT_ENTRY_SIZE, b"\0")


def _header(
    total_sectors: int, disk_guid: uuid.UUID, current: int, backup: int, at: int, crc: int
) -> bytes:
    fields = (
        b"EFI PART",
        0x00010000,
        92,
        0,
        0,
        current,
        backup,
        GPT_SECTORS + 1,  # first usable: after MBR, header and entries
        total_sectors - GPT_SECTORS - 1,  # last usable
        disk_guid.bytes_le,
        at,
        GPT_ENTRIES,
        GPT_ENTRY_SIZE,
        crc,
    )
    raw = struct.pack(_HEADER, *fields)
    raw = raw[:16] + struct.pack("<I", zlib.crc32(raw)) + raw[20:]
    return raw.ljust(SECTOR, b"\0")


def last_usable(total_sectors: int) -> int:
    return total_sectors - GPT_SECTORS - 1


# Where partitions the agent places begin and end: 1 MiB.
ALIGN = 2048


def tail_start(total_sectors: int, sectors: int) -> int:
    """The first sector of *sectors* placed last on the disk, before the
    backup GPT, starting on an ALIGN boundary (the seed partition; a grown
    partition ends just before it)."""
    return (last_usable(total_sectors) + 1 - sectors) // ALIGN * ALIGN


def gpt_tables(
    total_sectors: int, disk_guid: uuid.UUID, parts: list[Partition] | list[tuple]
) -> tuple[bytes, bytes]:
    """(protective MBR + primary header + entries, backup entries + header)."""
    entries = _entries([Partition(*p) for p in parts])
    crc = zlib.crc32(entries)
    mbr = bytearray(SECTOR)
    mbr[446:462] = struct.pack(
        "<B3sB3sII",
        0,
        b"\x00\x02\x00",
        0xEE,
        b"\xff\xff\xff",
        1,
        min(total_sectors - 1, 0xFFFFFFFF),
    )
    mbr[510:512] = b"\x55\xaa"
    last = total_sectors - 1
    primary = bytes(mbr) + _header(total_sectors, disk_guid, 1, last, 2, crc) + entries
    backup = entries + _header(total_sectors, disk_guid, last, 1, last - GPT_SECTORS + 1, crc)
    return primary, backup


def read(fd: int) -> Table | None:
    """The disk's GPT from its primary header (None: the disk has none);
    GPTError for one that is damaged."""
    raw = os.pread(fd, SECTOR, SECTOR)
    if raw[:8] != b"EFI PART":
        return None
    fields = struct.unpack(_HEADER, raw[:92])
    size = fields[2]
    if not 92 <= size <= SECTOR:
        raise GPTError(f"GPT header size {size}")
    check = raw[:16] + b"\0\0\0\0" + raw[20:size]
    if zlib.crc32(check) != fields[3]:
        raise GPTError("the primary GPT header's checksum is wrong")
    entries_lba, count, entry_size, entries_crc = fields[10], fields[11], fields[12], fields[13]
    if entry_size < GPT_ENTRY_SIZE or count * entry_size > 1 << 20:
        raise GPTError(f"GPT entries of {count} x {entry_size} bytes")
    table = os.pread(fd, count * entry_size, entries_lba * SECTOR)
    if zlib.crc32(table) != entries_crc:
        raise GPTError("the GPT partition entries' checksum is wrong")
    parts: list[Partition | None] = []
    for i in range(count):
        entry = table[i * entry_size : i * entry_size + GPT_ENTRY_SIZE]
        type_guid, part_guid, first, last, attributes, name = struct.unpack(_ENTRY, entry)
        if type_guid == bytes(16):
            parts.append(None)
            continue
        parts.append(
            Partition(
                uuid.UUID(bytes_le=type_guid),
                uuid.UUID(bytes_le=part_guid),
                first,
                last,
                name.decode("utf-16-le", "replace").rstrip("\0"),
                attributes,
            )
        )
    while parts and parts[-1] is None:
        parts.pop()
    return Table(uuid.UUID(bytes_le=fields[9]), tuple(parts))


def write(fd: int, total_sectors: int, table: Table) -> None:
    """The headers and entries of *table*, primary at the start and backup
    at the disk's end; the first sector is left as it is."""
    entries = _entries(list(table.slots))
    crc = zlib.crc32(entries)
    last = total_sectors - 1
    backup_at = last - GPT_SECTORS + 1
    # The backup first: a crash between the two writes leaves the old
    # primary, which still describes what the disk holds.
    os.pwrite(fd, entries, backup_at * SECTOR)
    os.pwrite(fd, _header(total_sectors, table.disk_guid, last, 1, backup_at, crc), last * SECTOR)
    os.pwrite(
        fd,
        _header(total_sectors, table.disk_guid, 1, last, 2, crc) + entries,
        SECTOR,
    )
