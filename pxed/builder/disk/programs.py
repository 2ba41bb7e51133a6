"""The external programs disk assembly runs, through the shared runner in
`pxed.tools`, with their failures as `AssemblyError`."""

from __future__ import annotations

import subprocess

from pxed import tools
from pxed.builder.disk.errors import AssemblyError

# The Debian package to name when a program is missing.
PACKAGES = {
    "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
}
# A multi-GiB root takes minutes in mke2fs -d; an hour means it hangs.
TIMEOUT = 3600
# mtools refuses a FAT whose geometry it finds odd; ours is made by mkfs.fat.
ENV = {"MTOOLS_SKIP_CHECK": "1"}


def find(name: str) -> str:
    """The path of program *name* (one of `PACKAGES`)."""
    try:
        return tools.find(name, package=PACKAGES[name])
    except tools.ToolError as e:
        raise AssemblyError(e.message) from None


def run(cmd: list[str], *, stdout: int = subprocess.PIPE) -> str:
    """Run a program; its stderr, or AssemblyError with the last line of it."""
    try:
        return tools.run(cmd, timeout=TIMEOUT, stdout=stdout, env=ENV)
    except tools.ToolError as e:
        raise AssemblyError(e.message) from e
