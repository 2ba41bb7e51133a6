"""What every test that boots QEMU VMs uses (tests/e2e, tests/realnet):
the ``qemu`` and ``mgmtos`` fixtures, a plugin of tests/conftest.py so
both suites share one management OS build per run, and ``run_vm`` /
``spawn_vm`` that run a VM to its end under Twisted."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from twisted.internet import defer, protocol, reactor

from pxed import mgmtosbuild
from tests.helpers import MAC, missing, require_tool

OVMF = Path("/usr/share/ovmf/OVMF.fd")
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")  # Debian ipxe-qemu
MGMTOS_CMDLINE = "console=ttyS0,115200 pxed.after=poweroff"


@pytest.fixture(scope="session")
def qemu() -> str:
    path = require_tool("qemu-system-x86_64", "qemu-system-x86")
    if not IPXE_ROM.exists():
        missing(f"{IPXE_ROM} missing: apt-get install ipxe-qemu")
    return path


@pytest.fixture(scope="session")
def mgmtos(tmp_path_factory) -> Path:
    """The reference management OS, built once per run by pxed's build
    script (pxed/mgmtos/build.sh).  The Debian kernel package is cached in
    build.sh's default cache dir, /var/cache/pxed/mgmtos (or
    $PXED_MGMTOS_CACHE), which a pxed building it at first start uses too
    (its ``mgmtos_cache`` default, tests/e2e/test_firstrun.py): CI downloads
    it once."""
    static = tmp_path_factory.mktemp("static")
    out = static / "mgmtos" / "x86_64"
    done = subprocess.run(
        ["bash", str(mgmtosbuild.SCRIPT), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0 or not (out / "vmlinuz").exists():
        missing(f"pxed/mgmtos/build.sh failed: {(done.stderr or done.stdout)[-2000:]}")
    return static


@dataclass
class VMRun:
    exit_code: int | None
    serial: str
    seconds: float


class _QEMU(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred = defer.Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


async def run_vm(
    qemu: str,
    tmp: Path,
    disks: list[Path],
    *,
    port: int | None = None,
    uefi: bool = False,
    timeout: float = 240,
    stop_when=None,
    memory_mib: int = 768,
    mac: str = MAC,
    ssh_port: int | None = None,
) -> VMRun:
    """Boot a VM (*memory_mib* of RAM, its NIC's MAC *mac*) and wait for it
    to power off (or *timeout*, or until ``stop_when(serial_text)`` holds).
    With *port* it netboots from pxed there; otherwise it boots its first
    disk, with no NIC unless *ssh_port* is given: then a user-mode NIC
    (DHCP from QEMU) whose port 22 is that port on the host's loopback.
    The serial console goes to a file."""
    serial = tmp / f"serial-{len(list(tmp.glob('serial-*')))}.log"
    args = [
        qemu,
        "-machine",
        "pc",
        "-m",
        str(memory_mib),
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{serial}",
    ]
    if uefi:
        args += ["-bios", str(OVMF)]
    for i, disk in enumerate(disks):
        if ssh_port is None:
            args += ["-drive", f"file={disk},if=virtio,format=raw,index={i}"]
        else:
            # With a NIC OVMF would try PXE and HTTP boot first (minutes
            # under TCG): a bootindex puts the first disk ahead of it.
            boot = ",bootindex=0" if i == 0 else ""
            args += [
                "-drive",
                f"file={disk},if=none,format=raw,id=d{i}",
                "-device",
                f"virtio-blk-pci,drive=d{i}{boot}",
            ]
    if port is not None:
        # Netboot from pxed: iPXE fetches /ipxe, which chains to /ipxe/<mac>.
        args += [
            "-netdev",
            f"user,id=n0,bootfile=http://10.0.2.2:{port}/ipxe",
            "-device",
            # QEMU picks Debian's iPXE ROM for virtio-net by itself.
            f"virtio-net-pci,netdev=n0,mac={mac}",
            "-boot",
            "n",
        ]
    elif ssh_port is not None:
        args += [
            "-netdev",
            f"user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
            # No ROM: the disk boots, not the network.
            "-device",
            f"virtio-net-pci,netdev=n0,mac={mac},romfile=",
        ]
    else:
        args += ["-nic", "none", "-boot", "c"]
    return await spawn_vm(args, serial, timeout, stop_when)


async def spawn_vm(args: list[str], serial: Path, timeout: float, stop_when=None) -> VMRun:
    """Run the VM *args* (``args[0]`` a path) whose serial console goes to
    *serial* until it exits, *timeout* passes or ``stop_when(serial_text)``
    holds; then it is killed."""
    proto = _QEMU()
    started = reactor.seconds()
    transport = reactor.spawnProcess(proto, args[0], args, env=None)
    code = None
    while True:
        waited = await first_of(proto.ended, 0.5)
        if waited is not None:
            code = waited[0]
            break
        text = serial.read_text(errors="replace") if serial.exists() else ""
        if reactor.seconds() - started > timeout or (stop_when and stop_when(text)):
            transport.signalProcess("KILL")
            await proto.ended
            break
    text = serial.read_text(errors="replace") if serial.exists() else ""
    if code != 0 and proto.output:
        text += "\n[qemu] " + proto.output.decode(errors="replace")
    return VMRun(code, text, reactor.seconds() - started)


async def first_of(d: defer.Deferred, seconds: float):
    """(result,) if *d* fires within *seconds*, else None; *d* stays usable."""
    if d.called:
        return (await d,)
    box: list = []
    waiter = defer.Deferred()
    d.addBoth(lambda r: (box.append(r), waiter.called or waiter.callback(None), r)[-1])
    call = reactor.callLater(seconds, lambda: waiter.called or waiter.callback(None))
    await waiter
    if call.active():
        call.cancel()
    return (box[0],) if box else None
