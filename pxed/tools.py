"""Running the external programs pxed relies on (mke2fs, mkfs.fat, debugfs,
mtools): found on PATH or in the sbin directories, run with stdin closed and
stderr captured under a timeout, a failure turned into one line naming the
program and the last thing it printed.

Everything here blocks: call it on a worker thread (the IO pool, the
builder's pool).  It uses the standard library only, so the disk assembly
can run under a bare interpreter (its test runs it as the nobody user)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

# mkfs and friends live here on Debian, and a service's PATH often lacks them.
SBIN_PATH = "/usr/sbin:/sbin"


class ToolError(Exception):
    """A program could not be run, failed or ran too long; *message* is one
    line for a log or an error answer."""

    def __init__(self, message: str, tool: str) -> None:
        super().__init__(message)
        self.message = message
        self.tool = tool


class ToolNotFound(ToolError):
    """The program is not installed."""


class ToolFailed(ToolError):
    """The program exited with a non-zero status; *detail* is the last line
    it printed ("" when it printed nothing)."""

    def __init__(self, tool: str, returncode: int, detail: str) -> None:
        super().__init__(f"{tool} failed (exit {returncode}): {detail or 'no output'}", tool)
        self.returncode = returncode
        self.detail = detail


def find(name: str, *, package: str | None = None) -> str:
    """The full path of program *name*; `ToolNotFound` naming the Debian
    *package* to install when it is missing."""
    path = shutil.which(name) or shutil.which(name, path=SBIN_PATH)
    if path is None:
        hint = f": install the Debian package {package}" if package else ""
        raise ToolNotFound(f"{name} not found{hint}", name)
    return path


def last_line(text: str) -> str:
    """The last non-blank line of *text*, stripped; "" if there is none."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run(
    cmd: Sequence[str],
    *,
    timeout: float,
    stdout: int = subprocess.PIPE,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run *cmd* (its first item a path from `find`) and return what it wrote
    to stderr, which some tools (debugfs) use to report problems while
    exiting 0.  A non-zero exit raises `ToolFailed` with the last line of
    stderr (or of stdout, when stderr is empty); a program that cannot be
    started or outlives *timeout* seconds raises `ToolError`.  *env* adds to
    the environment; LC_ALL=C keeps messages in one language."""
    name = os.path.basename(cmd[0])
    try:
        proc = subprocess.run(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env={**os.environ, "LC_ALL": "C", **(env or {})},
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"{name} did not finish within {timeout:g} s", name) from e
    except OSError as e:
        raise ToolError(f"{name}: {e.strerror}", name) from e
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        out = proc.stdout.decode(errors="replace") if proc.stdout else ""
        raise ToolFailed(name, proc.returncode, last_line(err) or last_line(out))
    return err
