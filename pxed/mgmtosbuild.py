"""The management OS at start: for every configured architecture whose
kernel or initrd is missing from the static dir, build it in the background
with pxed's own build script (pxed/mgmtos/build.sh, installed with the
package) when this host can, or say in the log what to run by hand.

The build is a child process (the reactor is never blocked, the API answers
from the first second); its progress lines go to pxed's log.  While an
architecture builds, its machines are told to boot from their disks (the
boot routes ask ``building``) and /healthz says ``building``; once the files
are there it says ``ready`` and machines netboot into it."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
from pathlib import Path

from twisted.application.service import Service
from twisted.internet import protocol
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.logger import Logger

from pxed.config import Config

log = Logger()

SCRIPT = Path(__file__).parent / "mgmtos" / "build.sh"
# The architectures build.sh can build, by the host's platform.machine().
BUILDABLE = {"x86_64": "x86_64", "amd64": "x86_64"}
READY, BUILDING, MISSING, FAILED = "ready", "building", "missing", "failed"
# Seconds a build may take before it is killed (a stalled download).
BUILD_TIMEOUT = 1800.0


def _is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


class ManagementOS(Service):
    """Each architecture's management OS: its state (``states``) and, at
    start, the builds of missing ones."""

    name = "mgmtos"

    def __init__(self, config: Config, reactor) -> None:
        self._config = config
        self._reactor = reactor
        # Read here, not bound at import: a test swaps in a quick stand-in.
        self._script = SCRIPT
        self._state: dict[str, str] = {}
        self._builds: dict[str, _Build] = {}

    # --- what the boot routes and /healthz ask ------------------------------------
    def building(self, arch: str) -> bool:
        """Whether *arch*'s management OS is being built (no file access:
        the boot routes ask on every answer)."""
        return self._state.get(arch) == BUILDING

    def states(self) -> dict[str, str]:
        """Every architecture's state; one not there yet is looked at again
        (someone may have built it by hand since)."""
        for arch in self._config.mgmtos:
            if self._state.get(arch) in (MISSING, FAILED, None) and not self._missing(arch):
                self._state[arch] = READY
        return dict(self._state)

    # --- start and stop ---------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        for arch in self._config.mgmtos:
            self._state[arch] = READY if not self._missing(arch) else MISSING
            if self._state[arch] == MISSING:
                self._build_or_say(arch)

    def _build_or_say(self, arch: str) -> None:
        """Start building *arch*'s missing management OS, or log why not and
        the command that would."""
        outdir = self._outdir(arch)
        what = (
            f"management OS {arch} missing ({', '.join(self._missing(arch))} under {self._static})"
        )
        if arch not in BUILDABLE.values():
            # Only news to those who have such machines.
            log.info(
                "{what}; {arch} machines cannot netboot until its vmlinuz and initramfs are"
                " there (pxed's build script makes x86_64 only)",
                what=what,
                arch=arch,
            )
            return
        if outdir is None:
            log.warn(
                "{what}: put the files there (pxed's build script makes vmlinuz and"
                " initramfs in one directory)",
                what=what,
            )
            return
        command = self.command(outdir)
        why_not = self._cannot_build(arch)
        if why_not is not None:
            log.warn(
                "{what}; {arch} machines cannot netboot until it is there."
                " pxed does not build it ({why}): run as root on Debian ({arch}): {command}",
                what=what,
                arch=arch,
                why=why_not,
                command=command,
            )
            return
        log.warn(
            "management OS {arch} missing: building it into {outdir} (a few minutes the"
            " first time); machines are told to boot from disk until it is ready",
            arch=arch,
            outdir=str(outdir),
        )
        build = _Build(arch, outdir, command, self._finished)
        build.started = self._reactor.seconds()
        env = {**os.environ, "LC_ALL": "C", "PXED_MGMTOS_CACHE": str(self._config.mgmtos_cache)}
        bash = shutil.which("bash") or "/bin/bash"
        try:
            self._reactor.spawnProcess(build, bash, [bash, str(self._script), str(outdir)], env=env)
        except OSError as e:
            self._state[arch] = FAILED
            log.error(
                "management OS {arch}: cannot start {command}: {e}", arch=arch, command=command, e=e
            )
            return
        self._state[arch] = BUILDING
        self._builds[arch] = build
        build.timeout = self._reactor.callLater(BUILD_TIMEOUT, build.kill)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        ends = [b.kill() for b in self._builds.values()]
        if not ends:
            return succeed(None)
        return gatherResults(ends).addCallback(lambda _: None)

    def _finished(self, build: _Build, code: int | None) -> None:
        self._builds.pop(build.arch, None)
        took = self._reactor.seconds() - build.started
        if code == 0 and not self._missing(build.arch):
            self._state[build.arch] = READY
            log.warn(
                "management OS {arch} ready: built in {took:.0f} s into {outdir};"
                " its machines netboot into it now",
                arch=build.arch,
                took=took,
                outdir=str(build.outdir),
            )
            return
        self._state[build.arch] = FAILED
        if not self.running:
            return  # stopped mid-build: pxed is going away
        log.error(
            "management OS {arch}: the build failed after {took:.0f} s ({detail});"
            " run it by hand as root to see why: {command}",
            arch=build.arch,
            took=took,
            detail=build.last or f"exit {code}",
            command=build.command,
        )

    # --- the files ------------------------------------------------------------------
    @property
    def _static(self) -> Path:
        return self._config.static_path

    def _missing(self, arch: str) -> list[str]:
        """*arch*'s kernel and initrd paths (under the static dir) that are
        not there; URLs are someone else's to serve."""
        files = self._config.mgmtos[arch]
        paths = [files.kernel, *files.initrd]
        return [p for p in paths if not _is_url(p) and not (self._static / p).is_file()]

    def _outdir(self, arch: str) -> Path | None:
        """Where build.sh writes *arch*'s files: the directory of kernel
        ``D/vmlinuz`` and initrd ``D/initramfs``; None for another layout."""
        files = self._config.mgmtos[arch]
        kernel = Path(files.kernel)
        if (
            _is_url(files.kernel)
            or kernel.name != "vmlinuz"
            or files.initrd != (str(kernel.parent / "initramfs"),)
        ):
            return None
        return (self._static / kernel.parent).absolute()

    def command(self, outdir: Path) -> str:
        return f"bash {self._script} {outdir}"

    def _cannot_build(self, arch: str) -> str | None:
        if self._config.mgmtos_build == "off":
            return "mgmtos_build is off"
        host = platform.machine()
        if BUILDABLE.get(host) != arch:
            return f"this host is {host}"
        if os.geteuid() != 0:
            return "not running as root"
        if not Path("/etc/debian_version").exists():
            return "not a Debian host"
        return None


class _Build(protocol.ProcessProtocol):
    """One run of build.sh: its ``build.sh: …`` lines to the log."""

    def __init__(self, arch: str, outdir: Path, command: str, finished) -> None:
        self.arch, self.outdir, self.command = arch, outdir, command
        self._finished = finished
        self._partial = b""
        self.last = ""
        self.started = 0.0
        self.timeout = None
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        pass  # the closing how-to, for people running it by hand

    def errReceived(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            self.last = line.removeprefix("build.sh: ")
            log.info("management OS {arch}: {line}", arch=self.arch, line=self.last)

    def kill(self) -> Deferred[None]:
        if not self.ended.called:
            with contextlib.suppress(ProcessExitedAlready):
                self.transport.signalProcess("TERM")
        waiter: Deferred[None] = Deferred()
        self.ended.addBoth(lambda r: (waiter.callback(None), r)[1])
        return waiter

    def processEnded(self, reason) -> None:
        if self.timeout is not None and self.timeout.active():
            self.timeout.cancel()
        self._finished(self, reason.value.exitCode)
        self.ended.callback(None)
