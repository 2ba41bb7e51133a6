"""Disk assembly from an exported root filesystem tar: the GPT, the ext4 root
(owners, modes, device nodes read back with debugfs), the ESP (mtools), the
initramfs (parsed back here), and that it all works without root."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import uuid
import zlib
from pathlib import Path

import pytest

from pxed.builder import disk
from pxed.builder.disk import bootdisk
from tests.helpers import MIB, missing, require_tool

MTIME = 1_700_000_000
MARKER = b"written by the pxed disk test\n"
# security.capability for cap_net_raw+ep (VFS_CAP_REVISION_2)
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ROOT_TYPE = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"


def add(tf: tarfile.TarFile, name: str, kind=tarfile.REGTYPE, data: bytes = b"", **attrs):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    else:
        tf.addfile(info)


def make_rootfs(path: Path, *, kernel: bool = False) -> Path:
    """A busybox root filesystem tar with the awkward cases: setuid, another
    owner, an unreadable file, a read-only directory, a device node, a FIFO,
    a hard link, absolute and relative symlinks, a file capability."""
    busybox = Path(require_tool("busybox", "busybox-static")).read_bytes()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, "./", tarfile.DIRTYPE)
        for d in ("bin", "etc", "dev", "run", "home", "home/user", "ro"):
            add(tf, d, tarfile.DIRTYPE)
        add(tf, "tmp", tarfile.DIRTYPE, mode=0o1777)
        add(tf, "bin/busybox", data=busybox, mode=0o755)
        add(tf, "bin/sh", tarfile.SYMTYPE, linkname="busybox", mode=0o777)
        add(tf, "bin/ls", tarfile.SYMTYPE, linkname="/bin/busybox", mode=0o777)
        add(tf, "etc/marker", data=MARKER, mode=0o644)
        add(tf, "etc/marker-link", tarfile.LNKTYPE, linkname="etc/marker", mode=0o644)
        add(tf, "bin/su", data=b"#!/bin/sh\n", mode=0o4755)
        ping = tarfile.TarInfo("bin/ping")
        ping.mode, ping.mtime, ping.size = 0o755, MTIME, 5
        ping.pax_headers = {
            "SCHILY.xattr.security.capability": CAPABILITY.decode("utf-8", "surrogateescape")
        }
        tf.addfile(ping, io.BytesIO(b"ping\n"))
        add(tf, "dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
        add(tf, "dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660, gid=6)
        add(tf, "run/initctl", tarfile.FIFOTYPE, mode=0o600)
        add(tf, "home/user/notes", data=b"mine\n", mode=0o600, uid=1000, gid=1000)
        add(tf, "home/user", tarfile.DIRTYPE, mode=0o700, uid=1000, gid=1000)
        add(tf, "etc/shadow", data=b"root:*:19000::::::\n", mode=0o000)
        add(tf, "ro/file", data=b"read only\n", mode=0o444)
        add(tf, "ro", tarfile.DIRTYPE, mode=0o555)
        add(tf, "var/empty-sparse", data=bytes(3 * MIB))  # parent not in the tar
        if kernel:
            add(tf, "boot", tarfile.DIRTYPE)
            add(tf, "boot/vmlinuz-6.0.0-old", data=b"old kernel")
            add(tf, "boot/initrd.img-6.0.0-old", data=b"old initrd")
            add(tf, "boot/vmlinuz-6.1.0-test", data=b"MZ fake kernel 6.1")
            add(tf, "boot/initrd.img-6.1.0-test", data=b"fake initrd 6.1")
            add(tf, "vmlinuz", tarfile.SYMTYPE, linkname="boot/vmlinuz-6.1.0-test")
    return path


def tools():
    require_tool("mke2fs", "e2fsprogs")
    require_tool("debugfs", "e2fsprogs")
    require_tool("mkfs.fat", "dosfstools")
    require_tool("mcopy", "mtools")


def run(*cmd: str) -> str:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"{cmd}: {r.stderr}"
    return r.stdout


def debugfs(image: Path, offset: int, command: str) -> str:
    return run(require_tool("debugfs", "e2fsprogs"), "-R", command, f"{image}?offset={offset}")


def mtools(tool: str, image: Path, offset: int, *args: str) -> str:
    return run(require_tool(tool, "mtools"), "-i", f"{image}@@{offset}", *args)


def parse_gpt(image: Path) -> dict:
    """The GPT read back, every CRC checked, primary and backup compared."""
    size = image.stat().st_size
    with open(image, "rb") as f:
        mbr = f.read(512)
        primary = f.read(512 + 128 * 128)
        f.seek(size - 33 * 512)
        backup = f.read(33 * 512)
    assert mbr[510:] == b"\x55\xaa" and mbr[450] == 0xEE, "protective MBR"
    assert struct.unpack_from("<I", mbr, 454)[0] == 1

    def header(raw: bytes, entries: bytes, lba: int) -> dict:
        fields = struct.unpack_from("<8sIIIIQQQQ16sQIII", raw)
        assert fields[0] == b"EFI PART" and fields[2] == 92
        crc_zeroed = raw[:16] + b"\0\0\0\0" + raw[20:92]
        assert zlib.crc32(crc_zeroed) == fields[3], "header CRC"
        assert fields[5] == lba
        assert (fields[11], fields[12]) == (128, 128)
        assert zlib.crc32(entries) == fields[13], "entries CRC"
        return {
            "backup": fields[6],
            "first": fields[7],
            "last": fields[8],
            "guid": uuid.UUID(bytes_le=fields[9]),
            "entries_lba": fields[10],
        }

    sectors = size // 512
    main = header(primary[:512], primary[512:], 1)
    spare = header(backup[-512:], backup[:-512], sectors - 1)
    assert main["backup"] == sectors - 1 and spare["backup"] == 1
    assert (main["entries_lba"], spare["entries_lba"]) == (2, sectors - 33)
    assert primary[512:] == backup[:-512], "backup entries equal the primary ones"
    parts = []
    for i in range(128):
        entry = primary[512 + i * 128 : 512 + (i + 1) * 128]
        if entry[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        parts.append(
            {
                "type": str(uuid.UUID(bytes_le=entry[:16])),
                "guid": str(uuid.UUID(bytes_le=entry[16:32])),
                "first": first,
                "last": last,
                "name": entry[56:].decode("utf-16-le").rstrip("\0"),
            }
        )
    return {"guid": str(main["guid"]), "parts": parts, "first": main["first"]}


def stat_of(image: Path, offset: int, path: str) -> dict:
    out = debugfs(image, offset, f"stat {path}")
    words = out.replace(":", " ").split()
    return {
        "type": out.split("Type: ")[1].split()[0],
        "mode": int(words[words.index("Mode") + 1], 8),
        "uid": int(words[words.index("User") + 1]),
        "gid": int(words[words.index("Group") + 1]),
        "links": int(words[words.index("Links") + 1]),
        "text": out,
    }


def check_root(image: Path, layout: disk.DiskLayout) -> None:
    """The ext4 root holds the tar's files with the tar's owners and modes."""
    off = layout.root_offset
    e2fsck = require_tool("e2fsck", "e2fsprogs")
    r = subprocess.run([e2fsck, "-fn", f"{image}?offset={off}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert debugfs(image, off, "cat /etc/marker").encode() == MARKER
    root = stat_of(image, off, "/")
    assert (root["mode"], root["uid"], root["gid"]) == (0o755, 0, 0)
    assert stat_of(image, off, "/lost+found")["uid"] == 0
    marker = stat_of(image, off, "/etc/marker")
    assert (marker["type"], marker["mode"], marker["uid"], marker["links"]) == (
        "regular",
        0o644,
        0,
        2,
    )
    assert stat_of(image, off, "/etc/marker-link")["text"].split()[1] == marker["text"].split()[1]
    su = stat_of(image, off, "/bin/su")
    assert su["mode"] == 0o4755 and su["uid"] == 0
    assert stat_of(image, off, "/etc/shadow")["mode"] == 0
    notes = stat_of(image, off, "/home/user/notes")
    assert (notes["uid"], notes["gid"], notes["mode"]) == (1000, 1000, 0o600)
    home = stat_of(image, off, "/home/user")
    assert (home["uid"], home["mode"]) == (1000, 0o700)
    assert stat_of(image, off, "/ro")["mode"] == 0o555
    assert stat_of(image, off, "/tmp")["mode"] == 0o1777
    assert stat_of(image, off, "/var")["mode"] == 0o755, "implicit parent"
    null = stat_of(image, off, "/dev/null")
    assert (null["type"], null["mode"], null["uid"]) == ("character", 0o666, 0)
    assert "Device major/minor number: 01:03" in null["text"]
    sda = stat_of(image, off, "/dev/sda")
    assert (sda["type"], sda["mode"], sda["gid"]) == ("block", 0o660, 6)
    assert "Device major/minor number: 08:00" in sda["text"]
    fifo = stat_of(image, off, "/run/initctl")
    assert (fifo["type"], fifo["mode"]) == ("FIFO", 0o600)
    sh = stat_of(image, off, "/bin/sh")
    assert sh["type"] == "symlink" and 'Fast link dest: "busybox"' in sh["text"]
    assert 'Fast link dest: "/bin/busybox"' in stat_of(image, off, "/bin/ls")["text"]
    assert "security.capability (20)" in stat_of(image, off, "/bin/ping")["text"]
    listing = debugfs(image, off, "ls -l /bin")
    assert "busybox" in listing and "ping" in listing


def check_gpt(image: Path, layout: disk.DiskLayout) -> None:
    sgdisk = require_tool("sgdisk", "gdisk")
    assert "No problems found" in run(sgdisk, "-v", str(image))
    printed = run(sgdisk, "-p", str(image))
    assert "EF00  ESP" in printed and "8304  root" in printed
    gpt = parse_gpt(image)
    assert gpt["guid"] == layout.disk_guid
    esp, root = gpt["parts"]
    assert (esp["type"], esp["name"], esp["guid"]) == (ESP_TYPE, "ESP", layout.esp_partuuid)
    assert (root["type"], root["name"], root["guid"]) == (ROOT_TYPE, "root", layout.root_partuuid)
    assert len({gpt["guid"], esp["guid"], root["guid"]}) == 3
    assert esp["first"] * 512 == layout.esp_offset == MIB
    assert (esp["last"] + 1) * 512 == layout.esp_offset + layout.esp_size
    assert root["first"] * 512 == layout.root_offset and layout.root_offset % MIB == 0
    assert (root["last"] + 1) * 512 == layout.root_offset + layout.root_size
    assert layout.size == image.stat().st_size and layout.size % MIB == 0
    with open(image, "rb") as f:
        f.seek(layout.esp_offset)
        boot = f.read(512)
    assert boot[82:90] == b"FAT32   " and boot[510:512] == b"\x55\xaa"


def test_rootfs_stats(tmp_path):
    tar = make_rootfs(tmp_path / "k.tar", kernel=True)
    stats = disk.rootfs_stats(tar)
    assert stats.kernel == "boot/vmlinuz-6.1.0-test"
    assert stats.initrd == "boot/initrd.img-6.1.0-test"
    assert stats.files == 12
    assert stats.total_bytes > 3 * MIB + len(MARKER)
    plain = disk.rootfs_stats(make_rootfs(tmp_path / "p.tar"))
    assert (plain.kernel, plain.initrd, plain.files) == (None, None, 8)

    with tarfile.open(tmp_path / "boot.tar", "w") as tf:
        add(tf, "boot", tarfile.DIRTYPE)
        add(tf, "boot/vmlinuz-6.9.0-2-amd64", data=b"k9")
        add(tf, "boot/vmlinuz-6.10.0-1-amd64", data=b"k10")
        add(tf, "boot/initrd.img-6.9.0-2-amd64", data=b"i9")
        add(tf, "boot/initrd.img-6.10.0-1-amd64", data=b"i10")
    stats = disk.rootfs_stats(tmp_path / "boot.tar")
    assert stats.kernel == "boot/vmlinuz-6.10.0-1-amd64", "newest by version, not by text"
    assert stats.initrd == "boot/initrd.img-6.10.0-1-amd64"

    with tarfile.open(tmp_path / "links.tar", "w") as tf:
        add(tf, "boot/vmlinuz-6.1.0-9", data=b"k")
        add(tf, "boot/vmlinuz-6.2.0-1", data=b"k")
        add(tf, "boot/initrd.img-6.1.0-9", data=b"i")
        add(tf, "vmlinuz", tarfile.SYMTYPE, linkname="/boot/vmlinuz-6.1.0-9")
    stats = disk.rootfs_stats(tmp_path / "links.tar")
    assert stats.kernel == "boot/vmlinuz-6.1.0-9", "the /vmlinuz symlink wins"
    assert stats.initrd == "boot/initrd.img-6.1.0-9"


def test_empty_rootfs_is_an_error(tmp_path):
    tools()
    work = tmp_path / "work"
    work.mkdir()
    with tarfile.open(tmp_path / "empty.tar", "w") as tf:
        add(tf, "etc", tarfile.DIRTYPE)
        add(tf, "bin/sh", tarfile.SYMTYPE, linkname="busybox")
    (tmp_path / "zero.tar").touch()
    for tar in (tmp_path / "empty.tar", tmp_path / "zero.tar"):
        with pytest.raises(disk.EmptyRootfs):
            disk.rootfs_stats(tar)
        with pytest.raises(disk.EmptyRootfs):
            disk.make_disk(tar, tmp_path / "out.img", work)
        with pytest.raises(disk.EmptyRootfs):
            disk.make_initramfs(tar, tmp_path / "out.cpio.gz")
    assert not (tmp_path / "out.img").exists() and not (tmp_path / "out.cpio.gz").exists()
    assert list(work.iterdir()) == []
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(disk.AssemblyError, match="not a tar"):
        disk.rootfs_stats(tmp_path / "junk.tar")


def test_disk_with_kernel_boots_it_with_systemd_boot(tmp_path):
    tools()
    tar = make_rootfs(tmp_path / "rootfs.tar", kernel=True)
    work = tmp_path / "work"
    work.mkdir()
    image = tmp_path / "disk.img"
    lines: list[str] = []
    layout = disk.make_disk(tar, image, work, cmdline="console=ttyS0 quiet", log=lines.append)
    assert layout.has_bootloader and lines
    assert list(work.iterdir()) == [], "the scratch directory is removed"
    assert layout.root_size >= disk.DEFAULT_HEADROOM + 3 * MIB
    check_gpt(image, layout)
    check_root(image, layout)
    assert os.stat(image).st_blocks * 512 < 40 * MIB, "the image is sparse"

    esp = layout.esp_offset
    listing = mtools("mdir", image, esp, "-/", "-b", "::/")
    for path in (
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/EFI/systemd/systemd-bootx64.efi",
        "::/loader/loader.conf",
        "::/loader/entries/pxed.conf",
        "::/vmlinuz",
        "::/initrd.img",
    ):
        assert path in listing, listing
    efi = disk.SYSTEMD_BOOT_EFI.read_bytes()
    boot = subprocess.run(
        [require_tool("mtype", "mtools"), "-i", f"{image}@@{esp}", "::/EFI/BOOT/BOOTX64.EFI"],
        capture_output=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    ).stdout
    assert hashlib.sha256(boot).digest() == hashlib.sha256(efi).digest()
    assert mtools("mtype", image, esp, "::/vmlinuz") == "MZ fake kernel 6.1"
    assert mtools("mtype", image, esp, "::/initrd.img") == "fake initrd 6.1"
    assert mtools("mtype", image, esp, "::/loader/loader.conf").split("\n")[:2] == [
        "default pxed.conf",
        "timeout 0",
    ]
    entry = mtools("mtype", image, esp, "::/loader/entries/pxed.conf").splitlines()
    assert entry == [
        "title pxed",
        "linux /vmlinuz",
        "initrd /initrd.img",
        f"options root=PARTUUID={layout.root_partuuid} console=ttyS0 quiet",
    ]
    fsck = shutil.which("fsck.fat") or shutil.which("fsck.fat", path="/usr/sbin:/sbin")
    if fsck:
        esp_copy = tmp_path / "esp.img"
        with open(image, "rb") as src, open(esp_copy, "wb") as dst:
            src.seek(layout.esp_offset)
            dst.write(src.read(layout.esp_size))
        r = subprocess.run([fsck, "-n", str(esp_copy)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_disk_without_kernel_has_no_loader(tmp_path):
    tools()
    tar = make_rootfs(tmp_path / "rootfs.tar")
    work = tmp_path / "work"
    work.mkdir()
    image = tmp_path / "disk.img"
    layout = disk.make_disk(tar, image, work, headroom=16 * MIB, esp_size=40 * MIB)
    assert not layout.has_bootloader and layout.esp_size == 40 * MIB
    assert list(work.iterdir()) == []
    check_gpt(image, layout)
    check_root(image, layout)
    listing = mtools("mdir", image, layout.esp_offset, "-/", "-b", "::/")
    assert sorted(listing.split()) == ["::/EFI/", "::/EFI/BOOT/"]


def test_missing_bootloader_and_tools_are_clear_errors(tmp_path, monkeypatch):
    tools()
    tar = make_rootfs(tmp_path / "rootfs.tar", kernel=True)
    work = tmp_path / "work"
    work.mkdir()
    image = tmp_path / "disk.img"
    with pytest.raises(disk.AssemblyError, match="systemd-boot-efi"):
        disk.make_disk(tar, image, work, systemd_boot=tmp_path / "nope.efi")
    assert not image.exists() and list(work.iterdir()) == []

    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda n, **kw: None if n == "mkfs.fat" else real_which(n, **kw)
    )
    with pytest.raises(disk.AssemblyError, match=r"mkfs\.fat not found.*dosfstools"):
        disk.make_disk(tar, image, work)
    monkeypatch.undo()

    # A tool failing: a root far too small for its content.
    monkeypatch.setattr(bootdisk, "_root_geometry", lambda census, headroom: (2 * MIB, 64))
    with pytest.raises(disk.AssemblyError, match=r"^mke2fs failed \(exit \d+\): ") as e:
        disk.make_disk(tar, image, work)
    assert "\n" not in e.value.message
    assert not image.exists() and list(work.iterdir()) == []


@pytest.mark.parametrize(
    "members",
    [
        [("../escape", tarfile.REGTYPE, "")],
        [("etc", tarfile.SYMTYPE, "/tmp"), ("etc/passwd", tarfile.REGTYPE, "")],
        [("a", tarfile.SYMTYPE, ".."), ("a/b", tarfile.REGTYPE, "")],
    ],
    ids=["dotdot", "through-absolute-symlink", "through-relative-symlink"],
)
def test_members_never_escape_the_tree(tmp_path, members):
    tools()
    outside = tmp_path / "outside"
    outside.mkdir()
    work = outside / "work"
    work.mkdir()
    tar = tmp_path / "evil.tar"
    with tarfile.open(tar, "w") as tf:
        add(tf, "ok", data=b"fine")
        for name, kind, link in members:
            add(tf, name, kind, data=b"evil", linkname=link)
    with pytest.raises(disk.AssemblyError):
        disk.make_disk(tar, tmp_path / "out.img", work)
    assert sorted(p.name for p in outside.rglob("*")) == ["work"]
    assert not (tmp_path / "out.img").exists()


def parse_newc(data: bytes) -> list[dict]:
    entries, pos = [], 0
    while True:
        assert data[pos : pos + 6] == b"070701", pos
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, size = fields[11], fields[6]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += (110 + namesize + 3) & ~3
        body = data[pos : pos + size]
        pos += (size + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(data)
            return entries
        entries.append(
            {
                "name": name,
                "ino": fields[0],
                "mode": fields[1],
                "uid": fields[2],
                "gid": fields[3],
                "nlink": fields[4],
                "mtime": fields[5],
                "rdev": (fields[9], fields[10]),
                "data": body,
            }
        )


def test_initramfs_keeps_everything(tmp_path):
    tar = make_rootfs(tmp_path / "rootfs.tar", kernel=True)
    out = tmp_path / "initrd.cpio.gz"
    stats = disk.make_initramfs(tar, out)
    assert stats.files == 12
    with gzip.open(out) as f:
        entries = {e["name"]: e for e in parse_newc(f.read())}
    with tarfile.open(tar) as tf:
        names = {m.name.rstrip("/").removeprefix("./") or "." for m in tf}
    assert set(entries) == names
    assert len({e["ino"] for e in entries.values()}) == len(entries)
    busybox = Path(require_tool("busybox", "busybox-static")).read_bytes()
    assert entries["bin/busybox"]["data"] == busybox
    assert entries["bin/busybox"]["mode"] == stat.S_IFREG | 0o755
    assert entries["."]["mode"] == stat.S_IFDIR | 0o755
    assert entries["etc/marker"]["data"] == MARKER
    assert entries["etc/marker-link"]["data"] == MARKER, "hard link copied"
    assert entries["etc/marker-link"]["mode"] == stat.S_IFREG | 0o644
    assert entries["bin/su"]["mode"] == stat.S_IFREG | 0o4755
    assert entries["bin/sh"]["mode"] == stat.S_IFLNK | 0o777
    assert entries["bin/sh"]["data"] == b"busybox"
    assert entries["bin/ls"]["data"] == b"/bin/busybox"
    null = entries["dev/null"]
    assert (null["mode"], null["rdev"], null["data"]) == (stat.S_IFCHR | 0o666, (1, 3), b"")
    assert entries["dev/sda"]["mode"] == stat.S_IFBLK | 0o660
    assert (entries["dev/sda"]["rdev"], entries["dev/sda"]["gid"]) == ((8, 0), 6)
    assert entries["run/initctl"]["mode"] == stat.S_IFIFO | 0o600
    notes = entries["home/user/notes"]
    assert (notes["uid"], notes["gid"], notes["mode"]) == (1000, 1000, stat.S_IFREG | 0o600)
    assert entries["tmp"]["mode"] == stat.S_IFDIR | 0o1777
    assert entries["var/empty-sparse"]["data"] == bytes(3 * MIB)
    assert {e["mtime"] for e in entries.values()} == {MTIME}
    assert all(e["nlink"] == 1 for e in entries.values() if not stat.S_ISDIR(e["mode"]))


def _unprivileged_python() -> str | None:
    """An interpreter the nobody user can run (sys.executable may sit under
    a private /root)."""
    setpriv = shutil.which("setpriv")
    for python in (sys.executable, "/usr/bin/python3"):
        r = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", "1"],
            capture_output=True,
        )
        if r.returncode == 0:
            return python
    return None


def _disk_sources(dest: Path) -> Path:
    """A copy of the disk package and what it imports from pxed, readable by
    anyone, as the import root for a bare interpreter: the package needs
    nothing else (the installed pxed may sit under a private /root)."""
    pxed_dir = Path(disk.__file__).parents[2]
    for part in (
        "__init__.py",
        "tools.py",
        "builder/__init__.py",
        "agent/__init__.py",
        "agent/gpt.py",
    ):
        (dest / "pxed" / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pxed_dir / part, dest / "pxed" / part)
    shutil.copytree(
        pxed_dir / "builder" / "disk",
        dest / "pxed" / "builder" / "disk",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for path in [dest, *dest.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return dest


@pytest.mark.slow  # a second Python interpreter, as nobody
def test_make_disk_as_an_unprivileged_user(tmp_path):
    tools()
    if os.geteuid() != 0:
        shared, python, prefix = None, sys.executable, []
    else:
        setpriv = require_tool("setpriv", "util-linux")
        python = _unprivileged_python()
        if python is None:
            missing("no Python interpreter the nobody user can run")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        # tmp_path's parents are private to root: give nobody a directory in /tmp.
        shared = tempfile.mkdtemp(prefix="pxed-disk-test-")
        os.chown(shared, 65534, 65534)
    base = Path(shared) if shared else tmp_path
    try:
        tar = make_rootfs(base / "rootfs.tar", kernel=True)
        os.chmod(tar, 0o644)
        work = base / "work"
        work.mkdir()
        if prefix:
            os.chown(work, 65534, 65534)
        image = base / "disk.img"
        source = _disk_sources(base / "src")
        script = textwrap.dedent(
            f"""
            import dataclasses, json, os, sys
            assert os.geteuid() != 0 or not {bool(prefix)}
            sys.path.insert(0, {str(source)!r})
            from pxed.builder import disk
            layout = disk.make_disk({str(tar)!r}, {str(image)!r}, {str(work)!r},
                                    headroom=16 * 1024 * 1024)
            print(json.dumps(dataclasses.asdict(layout)))
            """
        )
        r = subprocess.run([*prefix, python, "-c", script], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        layout = disk.DiskLayout(**json.loads(r.stdout))
        if prefix:
            assert image.stat().st_uid == 65534, "made by the unprivileged user"
        assert list(work.iterdir()) == []
        check_gpt(image, layout)
        check_root(image, layout)
        entry = mtools("mtype", image, layout.esp_offset, "::/loader/entries/pxed.conf")
        assert f"root=PARTUUID={layout.root_partuuid} " in entry
    finally:
        if shared:
            shutil.rmtree(shared)
