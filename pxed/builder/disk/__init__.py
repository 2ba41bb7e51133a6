"""Disk assembly: a container's exported root filesystem (a plain tar, as
``docker export`` writes it) becomes a bootable GPT disk image or a gzipped
newc initramfs.

No root privileges, loop devices or mounts are needed.  The tar is unpacked
as the current user into a scratch directory inside the caller's work
directory, ``mke2fs -d`` writes the ext4 root straight into the disk file
(``-E offset=``), and one ``debugfs -w -f script 'disk?offset=N'`` run puts
back what an unprivileged unpack loses: owners, modes (setuid included),
device nodes, FIFOs and extended attributes (file capabilities).
``mkfs.fat --offset`` and mtools (``-i disk@@offset``) make and fill the EFI
system partition; the partition table is written here.

Everything streams in 1 MiB pieces; every function blocks (run it on a
worker thread) and takes explicit paths.  Failures raise `AssemblyError`
with a one-line message; a tar without regular files raises `EmptyRootfs`.

The parts, in the order a disk is made:

- `census`: reading the tar safely, counting it, finding kernel and initrd
- `unpack`: the rootless unpack into a scratch tree
- `debugfs`: the script that restores owners, modes, nodes and xattrs
- `gpt`: the partition table
- `bootdisk`: sizes, the ESP and the whole disk (`make_disk`)
- `initramfs`: the cpio alternative (`make_initramfs`)
- `programs` and `errors`: running mke2fs & co., and how failures read

This module re-exports what callers use, so ``from pxed.builder import
disk`` then ``disk.make_disk(...)`` is all they need.  It needs the standard
library and `pxed.tools` only: nothing else of pxed, nothing installed.
"""

from __future__ import annotations

from pxed.agent.gpt import (
    ESP_TYPE,
    GPT_ENTRIES,
    GPT_ENTRY_SIZE,
    GPT_SECTORS,
    ROOT_TYPE,
    SECTOR,
)
from pxed.builder.disk.bootdisk import (
    DEFAULT_CMDLINE,
    DEFAULT_ESP_SIZE,
    DEFAULT_HEADROOM,
    MIN_ESP_SIZE,
    MIN_ROOT_SIZE,
    SYSTEMD_BOOT_EFI,
    DiskLayout,
    make_disk,
)
from pxed.builder.disk.census import BLOCK, COPY_SIZE, MiB, RootfsStats, rootfs_stats
from pxed.builder.disk.errors import AssemblyError, EmptyRootfs, Log
from pxed.builder.disk.initramfs import make_initramfs

__all__ = [
    "BLOCK",
    "COPY_SIZE",
    "DEFAULT_CMDLINE",
    "DEFAULT_ESP_SIZE",
    "DEFAULT_HEADROOM",
    "ESP_TYPE",
    "GPT_ENTRIES",
    "GPT_ENTRY_SIZE",
    "GPT_SECTORS",
    "MIN_ESP_SIZE",
    "MIN_ROOT_SIZE",
    "ROOT_TYPE",
    "SECTOR",
    "SYSTEMD_BOOT_EFI",
    "AssemblyError",
    "DiskLayout",
    "EmptyRootfs",
    "Log",
    "MiB",
    "RootfsStats",
    "make_disk",
    "make_initramfs",
    "rootfs_stats",
]
