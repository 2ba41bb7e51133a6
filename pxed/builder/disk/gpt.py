"""The GPT writer: a protective MBR, the primary and backup GPT headers and
partition entries, built in memory for the caller to write at the start and
the end of the disk."""

from __future__ import annotations

import struct
import uuid
import zlib

SECTOR = 512
GPT_ENTRIES = 128
GPT_ENTRY_SIZE = 128
GPT_SECTORS = 1 + GPT_ENTRIES * GPT_ENTRY_SIZE // SECTOR  # header + entries: 33

ESP_TYPE = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
ROOT_TYPE = uuid.UUID("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")  # Linux root (x86-64)

# (type GUID, partition GUID, first sector, last sector, name)
Partition = tuple[uuid.UUID, uuid.UUID, int, int, str]


def gpt_tables(
    total_sectors: int,
    disk_guid: uuid.UUID,
    parts: list[Partition],
) -> tuple[bytes, bytes]:
    """(protective MBR + primary header + entries, backup entries + header)."""
    entries = b"".join(
        struct.pack(
            "<16s16sQQQ72s",
            type_guid.bytes_le,
            part_guid.bytes_le,
            first,
            last,
            0,
            name.encode("utf-16-le"),
        )
        for type_guid, part_guid, first, last, name in parts
    ).ljust(GPT_ENTRIES * GPT_ENTRY_SIZE, b"\0")
    entries_crc = zlib.crc32(entries)

    def header(current: int, backup: int, entries_lba: int) -> bytes:
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
            entries_lba,
            GPT_ENTRIES,
            GPT_ENTRY_SIZE,
            entries_crc,
        )
        raw = struct.pack("<8sIIIIQQQQ16sQIII", *fields)
        raw = raw[:16] + struct.pack("<I", zlib.crc32(raw)) + raw[20:]
        return raw.ljust(SECTOR, b"\0")

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
    primary = bytes(mbr) + header(1, last, 2) + entries
    backup = entries + header(last, 1, last - GPT_SECTORS + 1)
    return primary, backup
