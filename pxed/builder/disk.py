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
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import posixpath
import re
import shutil
import stat
import struct
import subprocess
import tarfile
import tempfile
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024
COPY_SIZE = MiB
SECTOR = 512
BLOCK = 4096  # ext4 block size used here

ESP_TYPE = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
ROOT_TYPE = uuid.UUID("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")  # Linux root (x86-64)
SYSTEMD_BOOT_EFI = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
DEFAULT_CMDLINE = "console=ttyS0,115200 console=tty0 rw"
DEFAULT_HEADROOM = 256 * MiB
DEFAULT_ESP_SIZE = 100 * MiB
MIN_ESP_SIZE = 33 * MiB  # FAT32 needs 65525 clusters
MIN_ROOT_SIZE = 32 * MiB
GPT_ENTRIES = 128
GPT_ENTRY_SIZE = 128
GPT_SECTORS = 1 + GPT_ENTRIES * GPT_ENTRY_SIZE // SECTOR  # header + entries: 33

Log = Callable[[str], None]

_PACKAGES = {
    "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
}


class AssemblyError(Exception):
    """The image could not be made; *message* is one line for the build log."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EmptyRootfs(AssemblyError):
    """The exported filesystem holds no regular file."""

    def __init__(self, message: str = "the exported root filesystem is empty") -> None:
        super().__init__(message)


@dataclass(frozen=True)
class RootfsStats:
    """What a root filesystem tar holds.  Paths are relative to the root
    (``boot/vmlinuz-6.1.0-18-amd64``), symlinks resolved."""

    files: int  # regular files (a hardlink is not counted again)
    total_bytes: int  # their sizes added up
    kernel: str | None
    initrd: str | None
    entries: int = 0  # every member: directories, links, device nodes too


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
# Reading the tar


def _member_name(name: str) -> str:
    """A member's path relative to the root ("" for the root itself); a path
    with ".." components is refused, as tar's safe extraction does."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise AssemblyError(f"unsafe path in the root filesystem tar: {name!r}")
    return "/".join(parts)


def _chroot_join(base: str, target: str) -> str:
    """Resolve symlink *target* found in directory *base*, as inside a chroot."""
    joined = target if target.startswith("/") else posixpath.join("/", base, target)
    return posixpath.normpath("/" + joined).lstrip("/")


def _version_key(name: str) -> tuple:
    return (
        not name.endswith(".old"),
        [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)],
    )


@contextlib.contextmanager
def _open_tar(tar_path: str | os.PathLike) -> Iterator[tarfile.TarFile]:
    try:
        if os.path.getsize(tar_path) == 0:
            raise EmptyRootfs()
        tf = tarfile.open(tar_path, "r:*")
    except FileNotFoundError as e:
        raise AssemblyError(f"root filesystem tar not found: {tar_path}") from e
    except tarfile.TarError as e:
        raise AssemblyError(f"not a tar archive: {tar_path}: {e}") from e
    try:
        with tf:
            yield tf
    except tarfile.TarError as e:
        raise AssemblyError(f"reading {tar_path}: {e}") from e
    except EOFError as e:
        raise AssemblyError(f"reading {tar_path}: truncated archive") from e


class _Census:
    """Counts members as they stream by and finds the kernel and initrd."""

    def __init__(self) -> None:
        self.entries = 0
        self.files = 0
        self.total_bytes = 0
        self.data_bytes = 0  # regular files and long symlinks, in whole blocks
        self.dirent_bytes = 0
        self.directories = 0
        self.regular: dict[str, int] = {}
        self.symlinks: dict[str, str] = {}
        self.hardlinks: dict[str, str] = {}

    def add(self, name: str, m: tarfile.TarInfo) -> None:
        self.entries += 1
        self.dirent_bytes += (8 + len(posixpath.basename(name).encode()) + 3) & ~3
        self.regular.pop(name, None)
        self.symlinks.pop(name, None)
        self.hardlinks.pop(name, None)
        if m.isreg():
            self.files += 1
            self.total_bytes += m.size
            self.data_bytes += -(-m.size // BLOCK) * BLOCK
            self.regular[name] = m.size
        elif m.issym():
            self.symlinks[name] = m.linkname
            if len(m.linkname.encode()) >= 60:
                self.data_bytes += BLOCK
        elif m.islnk():
            self.hardlinks[name] = _member_name(m.linkname)
        elif m.isdir():
            self.directories += 1

    def resolve(self, name: str) -> str | None:
        """The regular file *name* ends at, following links; None if none."""
        for _ in range(40):
            if name in self.regular:
                return name
            if name in self.hardlinks:
                name = self.hardlinks[name]
            elif name in self.symlinks:
                name = _chroot_join(posixpath.dirname(name), self.symlinks[name])
            else:
                return None
        return None

    def _boot(self, prefix: str) -> list[str]:
        names = [*self.regular, *self.symlinks, *self.hardlinks]
        found = [
            n
            for n in names
            if posixpath.dirname(n) == "boot" and posixpath.basename(n).startswith(prefix)
        ]
        return sorted(found, key=_version_key, reverse=True)

    def kernel(self) -> str | None:
        for name in ("vmlinuz", *self._boot("vmlinuz")):
            if resolved := self.resolve(name):
                return resolved
        return None

    def initrd(self, kernel: str | None) -> str | None:
        version = ""
        if kernel:
            version = re.sub(r"^vmlinuz-?", "", posixpath.basename(kernel))
        candidates = ["initrd.img", "boot/initrd.img"]
        if version:
            candidates[:0] = [
                f"boot/initrd.img-{version}",
                f"boot/initramfs-{version}.img",
                f"boot/initrd-{version}.img",
                f"boot/initrd-{version}",
            ]
        else:
            candidates += self._boot("initrd.img")
        for name in candidates:
            if resolved := self.resolve(name):
                return resolved
        return None

    def stats(self) -> RootfsStats:
        if self.files == 0:
            raise EmptyRootfs()
        kernel = self.kernel()
        return RootfsStats(
            files=self.files,
            total_bytes=self.total_bytes,
            kernel=kernel,
            initrd=self.initrd(kernel),
            entries=self.entries,
        )


def rootfs_stats(tar_path: str | os.PathLike) -> RootfsStats:
    """Count the files in a root filesystem tar and find its kernel: the
    target of ``/vmlinuz`` or the newest ``boot/vmlinuz*``, and the initrd
    of the same version (``boot/initrd.img-<version>``, or ``/initrd.img``).
    Raises `EmptyRootfs` when there is no regular file."""
    census = _Census()
    with _open_tar(tar_path) as tf:
        for m in tf:
            census.add(_member_name(m.name), m)
    return census.stats()


# ---------------------------------------------------------------------------
# Tools


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise AssemblyError(f"{name} not found: install the Debian package {_PACKAGES[name]}")
    return path


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _run(cmd: list[str], *, stdout: int = subprocess.PIPE, timeout: int = 3600) -> str:
    """Run a tool; its stderr, or AssemblyError with the last line of it."""
    env = {**os.environ, "LC_ALL": "C", "MTOOLS_SKIP_CHECK": "1"}
    name = os.path.basename(cmd[0])
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise AssemblyError(f"{name} did not finish within {timeout} s") from e
    except OSError as e:
        raise AssemblyError(f"{name}: {e.strerror}") from e
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        out = proc.stdout.decode(errors="replace") if proc.stdout else ""
        raise AssemblyError(f"{name} failed (exit {proc.returncode}): {_tail(err or out)}")
    return err


# ---------------------------------------------------------------------------
# Unpacking as an unprivileged user


@dataclass
class _Special:
    kind: str  # "c", "b" or "p"
    major: int
    minor: int
    mode: int
    uid: int
    gid: int
    mtime: int


@dataclass
class _Tree:
    """The unpacked root filesystem and what the unpack could not keep."""

    root: str
    # path -> (st_mode, uid, gid) the tar asks for
    meta: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    specials: dict[str, _Special] = field(default_factory=dict)
    xattrs: dict[str, dict[str, bytes]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {""})
    dir_times: dict[str, tuple[int, float]] = field(default_factory=dict)

    def path(self, name: str) -> str:
        return os.path.join(self.root, name) if name else self.root

    def ensure_dir(self, name: str) -> None:
        """Make directory *name* (and its parents) unless it exists; a symlink
        or file in the way is an error, never followed."""
        if name in self.dirs:
            return
        self.ensure_dir(posixpath.dirname(name))
        path = self.path(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o700)
        else:
            if not stat.S_ISDIR(st.st_mode):
                raise AssemblyError(f"/{name} is not a directory but has members below it")
        self.dirs.add(name)

    def clear(self, name: str, *, keep_dir: bool = False) -> bool:
        """Make room for member *name*; True if a directory is kept there."""
        self.specials.pop(name, None)
        self.xattrs.pop(name, None)
        path = self.path(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            raise AssemblyError(f"/{name} is both a directory and a non-directory in the tar")
        os.unlink(path)
        return False


def _write_file(src, path: str, perm: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    zeros = bytes(COPY_SIZE)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(COPY_SIZE):
            if len(chunk) == COPY_SIZE and chunk == zeros:
                out.seek(COPY_SIZE, os.SEEK_CUR)  # leave a hole
            else:
                out.write(chunk)
        out.truncate()
        os.fchmod(out.fileno(), perm | 0o600)


def _pax_xattrs(m: tarfile.TarInfo, encoding: str) -> dict[str, bytes]:
    found = {}
    for key, value in m.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            found[key[len("SCHILY.xattr.") :]] = value.encode(encoding, "surrogateescape")
    return found


def _unpack(tf: tarfile.TarFile, tree: _Tree, census: _Census, log: Log) -> None:
    """Unpack as the current user with tar's safe-extraction rules: paths
    never leave the tree, symlinks are made as they are (absolute targets
    too) and never followed.  Files get at least owner read/write and
    directories owner rwx, so mke2fs can read and we can delete them; the
    real modes and owners are recorded in *tree* for debugfs."""
    skipped = 0
    for m in tf:
        name = _member_name(m.name)
        census.add(name, m)
        perm = m.mode & 0o7777
        mtime = max(0, int(m.mtime))
        owner = (m.uid, m.gid)
        path = tree.path(name)
        if m.isdir():
            if name:
                tree.ensure_dir(posixpath.dirname(name))
                if not tree.clear(name, keep_dir=True):
                    os.mkdir(path, 0o700)
                tree.dirs.add(name)
            tree.meta[name] = (stat.S_IFDIR | perm, *owner)
            tree.dir_times[name] = (perm, mtime)
        elif not name:
            raise AssemblyError("the root of the tar is not a directory")
        elif m.isreg() or m.issym() or m.islnk() or m.ischr() or m.isblk() or m.isfifo():
            tree.ensure_dir(posixpath.dirname(name))
            tree.clear(name)
            tree.meta.pop(name, None)
            if m.isreg():
                with tf.extractfile(m) as src:
                    _write_file(src, path, perm)
                os.utime(path, (mtime, mtime), follow_symlinks=False)
                tree.meta[name] = (stat.S_IFREG | perm, *owner)
            elif m.issym():
                os.symlink(m.linkname, path)
                os.utime(path, (mtime, mtime), follow_symlinks=False)
                tree.meta[name] = (stat.S_IFLNK | perm, *owner)
            elif m.islnk():
                target = _member_name(m.linkname)
                if target in tree.specials:
                    tree.specials[name] = tree.specials[target]
                    continue
                try:
                    st = os.lstat(tree.path(target))
                except FileNotFoundError:
                    raise AssemblyError(f"/{name} is a hard link to missing /{target}") from None
                if stat.S_ISDIR(st.st_mode):
                    raise AssemblyError(f"/{name} is a hard link to a directory")
                os.link(tree.path(target), path, follow_symlinks=False)
                tree.meta[name] = (stat.S_IFMT(st.st_mode) | perm, *owner)
            else:
                kind = "c" if m.ischr() else "b" if m.isblk() else "p"
                ftype = {"c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[kind]
                tree.specials[name] = _Special(
                    kind, m.devmajor, m.devminor, ftype | perm, *owner, mtime
                )
                continue
        else:
            skipped += 1
            continue
        if xattrs := _pax_xattrs(m, tf.encoding or "utf-8"):
            tree.xattrs[name] = xattrs
    for name, (perm, mtime) in tree.dir_times.items():
        os.chmod(tree.path(name), perm | 0o700)
        os.utime(tree.path(name), (mtime, mtime))
    if skipped:
        log(f"pxed: skipped {skipped} tar members of unsupported types")


def _rmtree(path: str) -> None:
    def retry(func, p, _exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            func(p)

    shutil.rmtree(path, onerror=retry)


# ---------------------------------------------------------------------------
# debugfs: owners, modes, device nodes, xattrs


def _quote(path: str) -> bytes:
    """A path as one debugfs (libss) argument."""
    raw = os.fsencode(path)
    if b"\n" in raw or b"\r" in raw:
        raise AssemblyError(f"cannot set up a path with a line break: {path!r}")
    return b'"' + raw.replace(b'"', b'""') + b'"'


def _debugfs_script(tree: _Tree, scratch: str) -> tuple[bytes, int]:
    """The debugfs commands that make the filesystem match the tar, and how
    many paths they touch."""
    lines: list[bytes] = []
    touched = 0
    default_dir = (stat.S_IFDIR | 0o755, 0, 0)
    names = set(tree.meta) | tree.dirs
    for name in sorted(names):
        if name in tree.specials:
            continue
        want = tree.meta.get(name, default_dir)
        st = os.lstat(tree.path(name))
        have = (st.st_mode, st.st_uid, st.st_gid)
        fixes = [
            (field_, value)
            for field_, value, current in zip(("mode", "uid", "gid"), want, have, strict=True)
            if value != current or not name  # mke2fs may own the root to the user
        ]
        if fixes:
            touched += 1
            q = _quote("/" + name)
            for field_, value in fixes:
                value_text = f"0{value:o}" if field_ == "mode" else str(value)
                lines.append(b"sif " + q + f" {field_} {value_text}".encode())
    for name, sp in tree.specials.items():
        touched += 1
        lines.append(b"cd " + _quote("/" + posixpath.dirname(name)))
        args = "p" if sp.kind == "p" else f"{sp.kind} {sp.major} {sp.minor}"
        lines.append(b"mknod " + _quote(posixpath.basename(name)) + f" {args}".encode())
        q = _quote("/" + name)
        lines.append(b"sif " + q + f" mode 0{sp.mode:o}".encode())
        lines.append(b"sif " + q + f" uid {sp.uid}".encode())
        lines.append(b"sif " + q + f" gid {sp.gid}".encode())
        lines.append(b"sif " + q + f" mtime @{sp.mtime}".encode())
    if tree.specials:
        lines.append(b"cd /")
    n = 0
    for name, attrs in tree.xattrs.items():
        for key, value in attrs.items():
            n += 1
            value_file = os.path.join(scratch, f"xattr.{n}")
            with open(value_file, "wb") as f:
                f.write(value)
            lines.append(
                b"ea_set -f " + _quote(value_file) + b" " + _quote("/" + name) + b" " + _quote(key)
            )
    return b"".join(line + b"\n" for line in lines), touched


def _debugfs(image: str, offset: int, script: bytes, scratch: str) -> None:
    script_path = os.path.join(scratch, "debugfs.script")
    with open(script_path, "wb") as f:
        f.write(script)
    err = _run(
        [_tool("debugfs"), "-w", "-f", script_path, f"{image}?offset={offset}"],
        stdout=subprocess.DEVNULL,
    )
    # debugfs exits 0 even when commands fail; its errors are on stderr.
    problems = [
        line for line in err.splitlines() if line.strip() and not line.startswith("debugfs ")
    ]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise AssemblyError(f"debugfs: {problems[0].strip()}{more}")


# ---------------------------------------------------------------------------
# Sizes and the partition table


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


def _root_geometry(census: _Census, headroom: int) -> tuple[int, int]:
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


def _gpt(
    total_sectors: int,
    disk_guid: uuid.UUID,
    parts: list[tuple[uuid.UUID, uuid.UUID, int, int, str]],
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


# ---------------------------------------------------------------------------
# The ESP


def _esp_tree(
    esp_dir: str, tree: _Tree, stats: RootfsStats, systemd_boot: Path, options: str
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
    tools = {name: _tool(name) for name in ("mke2fs", "debugfs", "mkfs.fat", "mcopy")}
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
        _rmtree(scratch)


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
    tree = _Tree(os.path.join(scratch, "rootfs"))
    os.mkdir(tree.root, 0o700)
    census = _Census()
    say("pxed: unpacking the root filesystem")
    with _open_tar(tar_path) as tf:
        _unpack(tf, tree, census, say)
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
    _run(
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
    _run([tools["mcopy"], "-s", "-i", f"{out}@@{esp_offset}", *top, "::/"])
    _rmtree(esp_dir)
    if stats.kernel:
        say(
            f"pxed: installed systemd-boot with /{stats.kernel}"
            + (f" and /{stats.initrd}" if stats.initrd else "")
        )

    say(f"pxed: making the root filesystem ({root_size // MiB} MiB ext4, {inodes} inodes)")
    _run(
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
    script, touched = _debugfs_script(tree, scratch)
    say(
        f"pxed: setting owners and modes of {touched} paths,"
        f" {len(tree.specials)} device nodes and FIFOs"
    )
    _debugfs(out, root_offset, script, scratch)

    total_sectors = size // SECTOR
    root_sector = root_offset // SECTOR
    primary, backup = _gpt(
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


# ---------------------------------------------------------------------------
# The initramfs


def _newc(
    ino: int,
    mode: int,
    uid: int,
    gid: int,
    nlink: int,
    mtime: int,
    size: int,
    rdev: tuple[int, int],
    name: bytes,
) -> bytes:
    if size > 0xFFFFFFFF:
        raise AssemblyError("a file of 4 GiB or more does not fit in a cpio archive")
    values = (
        ino,
        mode,
        uid,
        gid,
        nlink,
        min(max(mtime, 0), 0xFFFFFFFF),
        size,
        0,
        0,
        rdev[0],
        rdev[1],
        len(name) + 1,
        0,
    )
    head = b"070701" + b"".join(b"%08X" % (v & 0xFFFFFFFF) for v in values) + name + b"\0"
    return head + b"\0" * (-len(head) % 4)


def make_initramfs(
    tar_path: str | os.PathLike, out_path: str | os.PathLike, *, log: Log | None = None
) -> RootfsStats:
    """Write the root filesystem in *tar_path* to *out_path* as a gzipped
    newc cpio archive (what the kernel unpacks as an initramfs), one member
    at a time.  Hard links become copies; owners, modes, times and device
    numbers are kept.  On failure *out_path* is removed."""
    say = log or (lambda _line: None)
    census = _Census()
    seen: dict[str, tarfile.TarInfo] = {}
    ino = 0
    try:
        with (
            _open_tar(tar_path) as tf,
            open(out_path, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz,
        ):
            encoding = tf.encoding or "utf-8"
            for m in tf:
                name = _member_name(m.name)
                census.add(name, m)
                seen[name] = m
                src = m
                if m.islnk():
                    target = _member_name(m.linkname)
                    if target not in seen:
                        raise AssemblyError(f"/{name} is a hard link to missing /{target}")
                    src = seen[target]
                    seen[name] = src
                perm = src.mode & 0o7777
                if src.isdir():
                    mode, nlink = stat.S_IFDIR | perm, 2
                elif src.isreg():
                    mode, nlink = stat.S_IFREG | perm, 1
                elif src.issym():
                    mode, nlink = stat.S_IFLNK | perm, 1
                elif src.ischr() or src.isblk() or src.isfifo():
                    ftype = stat.S_IFCHR if src.ischr() else stat.S_IFBLK if src.isblk() else 0
                    mode, nlink = (ftype or stat.S_IFIFO) | perm, 1
                else:
                    continue
                data = src.linkname.encode(encoding, "surrogateescape") if src.issym() else b""
                size = src.size if src.isreg() else len(data)
                rdev = (src.devmajor, src.devminor) if src.ischr() or src.isblk() else (0, 0)
                ino += 1
                cpio_name = (name or ".").encode(encoding, "surrogateescape")
                gz.write(
                    _newc(ino, mode, src.uid, src.gid, nlink, int(src.mtime), size, rdev, cpio_name)
                )
                if src.isreg():
                    written = 0
                    with tf.extractfile(src) as f:
                        while chunk := f.read(COPY_SIZE):
                            gz.write(chunk)
                            written += len(chunk)
                    if written != size:
                        raise AssemblyError(f"/{name}: truncated in the tar")
                else:
                    gz.write(data)
                gz.write(b"\0" * (-size % 4))
            gz.write(_newc(0, 0, 0, 0, 1, 0, 0, (0, 0), b"TRAILER!!!"))
        stats = census.stats()
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(out_path)
        raise
    say(f"pxed: initramfs of {stats.files} files, {os.path.getsize(out_path)} bytes")
    return stats
