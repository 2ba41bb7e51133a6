"""ESP and disk assembly: a root filesystem tar becomes a bootable GPT disk
image, partition 1 an EFI system partition (FAT32, made by ``mkfs.fat
--offset`` and filled with mtools), partition 2 an ext4 root written
straight into the disk file by ``mke2fs -d -E offset=``, then fixed up by
one debugfs run.  No root privileges, loop devices or mounts."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from pxed.agent.gpt import ESP_TYPE, ROOT_TYPE, SECTOR, gpt_tables
from pxed.builder.disk import programs
from pxed.builder.disk.census import BLOCK, Census, MiB, RootfsStats, open_tar
from pxed.builder.disk.debugfs import debugfs_script, run_debugfs
from pxed.builder.disk.errors import AssemblyError, Log
from pxed.builder.disk.unpack import Tree, rmtree, unpack

SYSTEMD_BOOT_EFI = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
DEFAULT_CMDLINE = "console=ttyS0,115200 console=tty0 rw"
DEFAULT_HEADROOM = 256 * MiB
DEFAULT_ESP_SIZE = 100 * MiB
MIN_ESP_SIZE = 33 * MiB  # FAT32 needs 65525 clusters
MIN_ROOT_SIZE = 32 * MiB


@dataclass(frozen=True)
class DiskLayout:
    """Where things are in a disk made by `make_disk`; offsets and sizes in
    bytes, GUIDs as lowercase strings."""

    size: int
    esp_offset: int
    esp_size: int
    root_offset: int
    root_size: int
    root_partuuid: str
    has_bootloader: bool
    esp_partuuid: str = ""
    disk_guid: str = ""


# ---------------------------------------------------------------------------
# Sizes


def _round_up(n: int | float, unit: int) -> int:
    return math.ceil(n / unit) * unit


def _journal_bytes(blocks: int) -> int:
    """mke2fs's default journal size (e2fsprogs 1.47) for 4 KiB blocks."""
    for limit, journal in (
        (32768, 1024),
        (256 * 1024, 4096),
        (512 * 1024, 8192),
        (4096 * 1024, 16384),
        (8192 * 1024, 32768),
        (16384 * 1024, 65536),
        (32768 * 1024, 131072),
    ):
        if blocks < limit:
            return journal * BLOCK
    return 262144 * BLOCK


def _root_geometry(census: Census, headroom: int) -> tuple[int, int]:
    """(size in bytes, inode count) for an ext4 holding the content plus
    *headroom*: data in whole blocks plus 15 % for metadata, the inode
    table, the journal, rounded up to 1 MiB."""
    data = census.data_bytes + census.directories * BLOCK + _round_up(census.dirent_bytes, BLOCK)
    base = data * 1.15 + 8 * MiB + headroom
    inodes = max(int(base) // 16384, math.ceil(census.entries * 1.1) + 1024)
    base += inodes * 256
    size = _round_up(base + _journal_bytes(int(base) // BLOCK), MiB)
    size = max(size, MIN_ROOT_SIZE)
    return size, max(inodes, size // 16384)


# ---------------------------------------------------------------------------
# The ESP


def _esp_tree(
    esp_dir: str, tree: Tree, stats: RootfsStats, systemd_boot: Path, options: str
) -> None:
    os.makedirs(os.path.join(esp_dir, "EFI", "BOOT"))
    if not stats.kernel:
        return
    os.makedirs(os.path.join(esp_dir, "EFI", "systemd"))
    os.makedirs(os.path.join(esp_dir, "loader", "entries"))
    shutil.copyfile(systemd_boot, os.path.join(esp_dir, "EFI", "BOOT", "BOOTX64.EFI"))
    shutil.copyfile(systemd_boot, os.path.join(esp_dir, "EFI", "systemd", "systemd-bootx64.efi"))
    # Same filesystem as the unpacked tree: link rather than copy.
    os.link(tree.path(stats.kernel), os.path.join(esp_dir, "vmlinuz"), follow_symlinks=False)
    entry = ["title pxed", "linux /vmlinuz"]
    if stats.initrd:
        os.link(tree.path(stats.initrd), os.path.join(esp_dir, "initrd.img"), follow_symlinks=False)
        entry.append("initrd /initrd.img")
    entry.append(f"options {options}")
    with open(os.path.join(esp_dir, "loader", "loader.conf"), "w") as f:
        f.write("default pxed.conf\ntimeout 0\n")
    with open(os.path.join(esp_dir, "loader", "entries", "pxed.conf"), "w") as f:
        f.write("\n".join(entry) + "\n")


# ---------------------------------------------------------------------------
# The disk


def make_disk(
    tar_path: str | os.PathLike,
    out_path: str | os.PathLike,
    work_dir: str | os.PathLike,
    *,
    headroom: int = DEFAULT_HEADROOM,
    esp_size: int = DEFAULT_ESP_SIZE,
    cmdline: str = DEFAULT_CMDLINE,
    systemd_boot: str | os.PathLike = SYSTEMD_BOOT_EFI,
    log: Log | None = None,
) -> DiskLayout:
    """Write a GPT disk image of the root filesystem in *tar_path* to
    *out_path*: partition 1 an EFI system partition (FAT32, *esp_size*,
    grown if the kernel and initrd need it), partition 2 an ext4 root sized
    from the content plus *headroom*.  When the tree has a kernel in /boot,
    the ESP gets systemd-boot (as the removable-media default loader
    ``EFI/BOOT/BOOTX64.EFI``) and an entry booting it with
    ``root=PARTUUID=<root> <cmdline>``.

    Needs no privileges.  Scratch space is a private directory inside
    *work_dir* (which must exist, on the same filesystem as *out_path*'s
    data); it is removed afterwards and nothing else is left in *work_dir*.
    On failure *out_path* is removed too."""
    say = log or (lambda _line: None)
    if esp_size < MIN_ESP_SIZE:
        raise ValueError(f"esp_size must be at least {MIN_ESP_SIZE} bytes for FAT32")
    if headroom < 0:
        raise ValueError("headroom must not be negative")
    out = os.fspath(out_path)
    if "?" in out or "@@" in out:
        raise AssemblyError(f"unusable output path for debugfs/mtools: {out}")
    tools = {name: programs.find(name) for name in ("mke2fs", "debugfs", "mkfs.fat", "mcopy")}
    try:
        scratch = tempfile.mkdtemp(prefix="disk-", dir=work_dir)
    except OSError as e:
        raise AssemblyError(f"work directory {work_dir}: {e.strerror}") from e
    try:
        return _make_disk(
            tar_path, out, scratch, tools, headroom, esp_size, cmdline, Path(systemd_boot), say
        )
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(out)
        raise
    finally:
        rmtree(scratch)


def _make_disk(
    tar_path: str | os.PathLike,
    out: str,
    scratch: str,
    tools: dict[str, str],
    headroom: int,
    esp_size: int,
    cmdline: str,
    systemd_boot: Path,
    say: Log,
) -> DiskLayout:
    tree = Tree(os.path.join(scratch, "rootfs"))
    os.mkdir(tree.root, 0o700)
    census = Census()
    say("pxed: unpacking the root filesystem")
    with open_tar(tar_path) as tf:
        unpack(tf, tree, census, say)
    stats = census.stats()
    say(f"pxed: unpacked {stats.files} files ({stats.total_bytes} bytes)")
    if stats.kernel and not systemd_boot.is_file():
        raise AssemblyError(
            f"the root filesystem has a kernel but {systemd_boot} is missing:"
            " install the Debian package systemd-boot-efi"
        )

    root_size, inodes = _root_geometry(census, headroom)
    boot_bytes = 0
    if stats.kernel:
        boot_bytes = 2 * systemd_boot.stat().st_size + census.regular[stats.kernel]
        if stats.initrd:
            boot_bytes += census.regular[stats.initrd]
    esp_size = max(_round_up(esp_size, MiB), _round_up(boot_bytes * 1.05 + 4 * MiB, MiB))

    esp_offset = MiB
    root_offset = esp_offset + esp_size
    size = root_offset + root_size + MiB  # the backup GPT lives in the last MiB
    disk_guid, esp_guid, root_guid = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    with open(out, "wb") as f:
        f.truncate(size)

    esp_sector = esp_offset // SECTOR
    cluster = ["-s", "1"] if esp_size <= 512 * MiB else []
    say(f"pxed: making the EFI system partition ({esp_size // MiB} MiB FAT32)")
    programs.run(
        [
            tools["mkfs.fat"],
            "-F",
            "32",
            *cluster,
            "-S",
            str(SECTOR),
            "-h",
            str(esp_sector),
            "-n",
            "ESP",
            f"--offset={esp_sector}",
            out,
            str(esp_size // 1024),
        ]
    )
    esp_dir = os.path.join(scratch, "esp")
    options = f"root=PARTUUID={root_guid} {cmdline}".strip()
    _esp_tree(esp_dir, tree, stats, systemd_boot, options)
    top = [os.path.join(esp_dir, n) for n in sorted(os.listdir(esp_dir))]
    programs.run([tools["mcopy"], "-s", "-i", f"{out}@@{esp_offset}", *top, "::/"])
    rmtree(esp_dir)
    if stats.kernel:
        say(
            f"pxed: installed systemd-boot with /{stats.kernel}"
            + (f" and /{stats.initrd}" if stats.initrd else "")
        )

    say(f"pxed: making the root filesystem ({root_size // MiB} MiB ext4, {inodes} inodes)")
    programs.run(
        [
            tools["mke2fs"],
            "-q",
            "-F",
            "-t",
            "ext4",
            "-T",
            "default",
            "-b",
            str(BLOCK),
            "-I",
            "256",
            "-N",
            str(inodes),
            "-L",
            "root",
            "-E",
            f"offset={root_offset},root_owner=0:0,assume_storage_prezeroed=1,nodiscard",
            "-d",
            tree.root,
            out,
            f"{root_size // 1024}k",
        ]
    )
    script, touched = debugfs_script(tree, scratch)
    say(
        f"pxed: setting owners and modes of {touched} paths,"
        f" {len(tree.specials)} device nodes and FIFOs"
    )
    run_debugfs(out, root_offset, script, scratch)

    total_sectors = size // SECTOR
    root_sector = root_offset // SECTOR
    primary, backup = gpt_tables(
        total_sectors,
        disk_guid,
        [
            (ESP_TYPE, esp_guid, esp_sector, esp_sector + esp_size // SECTOR - 1, "ESP"),
            (ROOT_TYPE, root_guid, root_sector, root_sector + root_size // SECTOR - 1, "root"),
        ],
    )
    with open(out, "r+b") as f:
        f.write(primary)
        f.seek(size - len(backup))
        f.write(backup)
        if f.seek(0, os.SEEK_END) != size:
            raise AssemblyError("the disk image changed size while being assembled")

    return DiskLayout(
        size=size,
        esp_offset=esp_offset,
        esp_size=esp_size,
        root_offset=root_offset,
        root_size=root_size,
        root_partuuid=str(root_guid),
        has_bootloader=stats.kernel is not None,
        esp_partuuid=str(esp_guid),
        disk_guid=str(disk_guid),
    )
