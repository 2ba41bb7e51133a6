"""The debugfs script: one ``debugfs -w`` run puts into the ext4 root what
an unprivileged unpack loses (owners, modes with setuid, device nodes,
FIFOs, extended attributes such as file capabilities)."""

from __future__ import annotations

import os
import posixpath
import stat
import subprocess

from pxed.builder.disk import programs
from pxed.builder.disk.errors import AssemblyError
from pxed.builder.disk.unpack import Tree


def _quote(path: str) -> bytes:
    """A path as one debugfs (libss) argument."""
    raw = os.fsencode(path)
    if b"\n" in raw or b"\r" in raw:
        raise AssemblyError(f"cannot set up a path with a line break: {path!r}")
    return b'"' + raw.replace(b'"', b'""') + b'"'


def debugfs_script(tree: Tree, scratch: str) -> tuple[bytes, int]:
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


def run_debugfs(image: str, offset: int, script: bytes, scratch: str) -> None:
    """Run *script* on the ext4 that starts *offset* bytes into *image*."""
    script_path = os.path.join(scratch, "debugfs.script")
    with open(script_path, "wb") as f:
        f.write(script)
    err = programs.run(
        [programs.find("debugfs"), "-w", "-f", script_path, f"{image}?offset={offset}"],
        stdout=subprocess.DEVNULL,
    )
    # debugfs exits 0 even when commands fail; its errors are on stderr.
    problems = [
        line for line in err.splitlines() if line.strip() and not line.startswith("debugfs ")
    ]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise AssemblyError(f"debugfs: {problems[0].strip()}{more}")
