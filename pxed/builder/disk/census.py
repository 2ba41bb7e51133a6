"""The tar census: reading a root filesystem tar (``docker export`` writes a
plain one) member by member, with safe member names, counting what it holds
and finding its kernel and initrd.  The counts size the ext4 root."""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

from pxed.builder.disk.errors import AssemblyError, EmptyRootfs

MiB = 1024 * 1024
COPY_SIZE = MiB  # tar members are read and written in pieces of this size
BLOCK = 4096  # ext4 block size used here


@dataclass(frozen=True)
class RootfsStats:
    """What a root filesystem tar holds.  Paths are relative to the root
    (``boot/vmlinuz-6.1.0-18-amd64``), symlinks resolved."""

    files: int  # regular files (a hardlink is not counted again)
    total_bytes: int  # their sizes added up
    kernel: str | None
    initrd: str | None
    entries: int = 0  # every member: directories, links, device nodes too


def member_name(name: str) -> str:
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
    """Sort key for kernel and initrd names: ".old" ones below all others,
    then by version with numbers compared as numbers."""
    return (
        not name.endswith(".old"),
        [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)],
    )


@contextlib.contextmanager
def open_tar(tar_path: str | os.PathLike) -> Iterator[tarfile.TarFile]:
    """The tar at *tar_path*, open for streaming; a missing, empty, broken
    or truncated archive becomes `AssemblyError` (or `EmptyRootfs`)."""
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


class Census:
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
            self.hardlinks[name] = member_name(m.linkname)
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
    census = Census()
    with open_tar(tar_path) as tf:
        for m in tf:
            census.add(member_name(m.name), m)
    return census.stats()
