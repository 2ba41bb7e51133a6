"""The initramfs: a root filesystem tar rewritten as a gzipped newc cpio
archive, the format the kernel unpacks into its first root, one member at a
time."""

from __future__ import annotations

import contextlib
import gzip
import os
import stat
import tarfile

from pxed.builder.disk.census import COPY_SIZE, Census, RootfsStats, member_name, open_tar
from pxed.builder.disk.errors import AssemblyError, Log


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
    census = Census()
    seen: dict[str, tarfile.TarInfo] = {}
    ino = 0
    try:
        with (
            open_tar(tar_path) as tf,
            open(out_path, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz,
        ):
            encoding = tf.encoding or "utf-8"
            for m in tf:
                name = member_name(m.name)
                census.add(name, m)
                seen[name] = m
                src = m
                if m.islnk():
                    target = member_name(m.linkname)
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
