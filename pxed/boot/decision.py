"""The boot decision: whether a netboot gets the management OS (and in
which mode, for which architecture) or boots from its local disk, and the
parameters a served answer carries.  Pure functions of what the boot view
holds; pxed.boot.render says it to pixiecore and iPXE."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from pxed.boot.snapshot import BootEntry
from pxed.config import BootFiles

# The management OS an unknown machine enlists with (its architecture is
# not known before it reports it).
ENLIST_ARCH = "x86_64"
ENLIST = "enlist"


@dataclass(frozen=True)
class Decision:
    serve: bool
    reason: str
    # What is served: the management OS of *arch*, in *mode* (None for a
    # known machine's work, "enlist" for an unknown MAC registering).
    arch: str | None = None
    mode: str | None = None


NOT_A_MAC = Decision(False, "not a MAC address")
OFF_NETWORK = Decision(False, "client not on a boot network")
ENLIST_FULL = Decision(False, "unknown MAC address; enlistment is full (max_enlisting)")


def decide(
    entry: BootEntry | None,
    policy: str,
    enlist: bool,
    unavailable: Callable[[str], str | None],
) -> Decision:
    """Serve the management OS to a managed machine that has work, or to
    every managed machine under the ``always`` policy, or (with *enlist*)
    to an unknown MAC in enlist mode; otherwise let the firmware boot
    from its local disk.  *unavailable(arch)*: why the management OS of
    *arch* cannot be served now (None: it can)."""
    if entry is None:
        if not enlist:
            return Decision(False, "unknown MAC address")
        why = unavailable(ENLIST_ARCH)
        if why is not None:
            return Decision(False, f"{why} to enlist")
        return Decision(True, "unknown MAC address: enlisting", ENLIST_ARCH, ENLIST)
    machine = entry.machine
    if not machine.managed:
        return Decision(False, "machine is not managed")
    if entry.work is not None:
        decision = Decision(True, "machine has queued work", machine.architecture)
    elif policy == "always":
        decision = Decision(True, "boot policy is always", machine.architecture)
    else:
        return Decision(False, "no queued work (boot policy on-demand)")
    why = unavailable(machine.architecture)
    return decision if why is None else Decision(False, why)


@dataclass(frozen=True)
class BootParams:
    kernel: str
    initrd: tuple[str, ...]
    cmdline: str


def file_url(base_url: str, path: str) -> str:
    if path.startswith(("http://", "https://")):
        return path
    return f"{base_url}/static/{quote(path.lstrip('/'))}"


def params(
    files: BootFiles, base_url: str, mac: str, token: str | None, mode: str | None = None
) -> BootParams:
    """*mode*: ``enlist`` for an unknown machine booted to register itself."""
    args = [files.cmdline] if files.cmdline else []
    args += [f"pxed.url={base_url}", f"pxed.mac={mac}"]
    if token:
        args.append(f"pxed.token={token}")
    if mode:
        args.append(f"pxed.mode={mode}")
    return BootParams(
        kernel=file_url(base_url, files.kernel),
        initrd=tuple(file_url(base_url, p) for p in files.initrd),
        cmdline=" ".join(args),
    )
