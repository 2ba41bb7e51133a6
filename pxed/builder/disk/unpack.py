"""Rootless unpack: a root filesystem tar unpacked as the current user, with
tar's safe-extraction rules, into a tree ``mke2fs -d`` can copy.  What an
unprivileged user cannot make (owners, setuid modes, device nodes, FIFOs,
extended attributes) is recorded in the `Tree` for the debugfs script."""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass, field

from pxed.builder.disk.census import COPY_SIZE, Census, member_name
from pxed.builder.disk.errors import AssemblyError, Log


@dataclass
class Special:
    """A device node or FIFO: an unprivileged user cannot make it, debugfs does."""

    kind: str  # "c", "b" or "p"
    major: int
    minor: int
    mode: int
    uid: int
    gid: int
    mtime: int


@dataclass
class Tree:
    """The unpacked root filesystem and what the unpack could not keep."""

    root: str
    # path -> (st_mode, uid, gid) the tar asks for
    meta: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    specials: dict[str, Special] = field(default_factory=dict)
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


def unpack(tf: tarfile.TarFile, tree: Tree, census: Census, log: Log) -> None:
    """Unpack as the current user with tar's safe-extraction rules: paths
    never leave the tree, symlinks are made as they are (absolute targets
    too) and never followed.  Files get at least owner read/write and
    directories owner rwx, so mke2fs can read and we can delete them; the
    real modes and owners are recorded in *tree* for debugfs."""
    skipped = 0
    for m in tf:
        name = member_name(m.name)
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
                target = member_name(m.linkname)
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
                tree.specials[name] = Special(
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


def rmtree(path: str) -> None:
    """Remove a scratch tree, read-only directories from the tar included."""

    def retry(func, p, _exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            func(p)

    shutil.rmtree(path, onerror=retry)
