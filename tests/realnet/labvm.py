"""QEMU VMs on the lab's taps, netbooting from their NIC's own firmware
(TCG, as in CI): SeaBIOS with Debian's iPXE option ROM for the NIC, or
OVMF's own network stack (VirtioNetDxe, PXE and HTTP boot) with the
NIC's option ROM left out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.realnet import lab
from tests.vmfixtures import OVMF, VMRun, spawn_vm

IPXE_ROMS = Path("/usr/lib/ipxe/qemu")  # Debian's ipxe-qemu
# OVMF's network stack, told by fw_cfg (OvmfPkg/RUNTIME_CONFIG.md) what to
# leave out: no IPv6 (no lab answers it; each try costs a timeout), and for
# HTTP boot no PXE either, so the boot option it takes is "UEFI HTTPv4".
OVMF_NO_IPV6 = ("-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no")
OVMF_NO_PXE = ("-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no")
# QEMU finds these by itself (``-L help``): efi-<nic>.rom, a BIOS and a
# UEFI image in one.  Named with romfile=, neither it nor pxe-<nic>.rom
# ever sent a DHCPDISCOVER under SeaBIOS here (QEMU 7.2).


@dataclass(frozen=True)
class Firmware:
    name: str
    # For the firmware matrix: the firmware, the NIC and the path it boots.
    firmware: str
    nic: str
    path: str
    args: tuple[str, ...] = ()
    nic_options: str = ""


BIOS_PXE = Firmware(
    "bios-pxe",
    "SeaBIOS (Debian seabios)",
    "virtio-net-pci, QEMU's default ROM for it: Debian's iPXE efi-virtio.rom",
    "DHCP (iPXE ROM, user class iPXE) -> pxed /ipxe -> /ipxe/<mac> -> management OS",
)
BIOS_E1000 = Firmware(
    "bios-pxe-e1000",
    "SeaBIOS (Debian seabios)",
    "e1000, QEMU's default ROM for it: Debian's iPXE efi-e1000.rom",
    BIOS_PXE.path,
)
UEFI_PXE = Firmware(
    "uefi-pxe",
    "OVMF (Debian ovmf, OVMF.fd), its own PXE (UefiPxeBcDxe)",
    "virtio-net-pci, no option ROM (OVMF's VirtioNetDxe)",
    "DHCP (PXEClient, arch 7) -> TFTP snponly.efi -> iPXE DHCP -> pxed /ipxe -> management OS",
    args=("-bios", str(OVMF), *OVMF_NO_IPV6),
    nic_options="romfile=",
)
UEFI_HTTP = Firmware(
    "uefi-http",
    "OVMF (Debian ovmf, OVMF.fd), its HTTP boot (HttpBootDxe), PXE off by fw_cfg",
    "virtio-net-pci, no option ROM (OVMF's VirtioNetDxe)",
    "DHCP (HTTPClient, arch 16) -> HTTP snponly.efi from pxed -> iPXE DHCP -> pxed /ipxe"
    " -> management OS",
    args=("-bios", str(OVMF), *OVMF_NO_IPV6, *OVMF_NO_PXE),
    nic_options="romfile=",
)


@dataclass
class Boot:
    """A VM's run, and when (seconds after it started) its firmware's chain
    reached pxed's answer for it."""

    firmware: Firmware
    mac: str
    run: VMRun
    at_pxed: float | None = None

    def timings(self) -> dict:
        return {
            "firmware": self.firmware.name,
            "nic": self.firmware.nic,
            "mac": self.mac,
            "seconds_to_pxed_answer": self.at_pxed,
            "seconds_to_deploy_complete_and_poweroff": round(self.run.seconds, 1),
            "exit_code": self.run.exit_code,
        }


async def boot(
    qemu: str,
    firmware: Firmware,
    *,
    tap: str,
    mac: str,
    disk: Path,
    serial: Path,
    memory_mib: int = 768,
    timeout: float = 420,
    at_pxed: Callable[[], bool] = lambda: False,
    stop_at_pxed: bool = False,
) -> Boot:
    """Power on a VM with *firmware* on *tap*, its NIC's MAC *mac*, one
    virtio disk; wait until it powers off (the management OS does, after
    its work: pxed.after=poweroff) or *timeout*.  ``at_pxed()`` says
    whether the machine has asked pxed for its answer yet (the BIOS iPXE
    ROM writes to the screen, not the serial console: pxed's log tells);
    with *stop_at_pxed* the VM is stopped then."""
    nic = firmware.nic.split(",")[0]
    options = f",{firmware.nic_options}" if firmware.nic_options else ""
    args = lab.netns_exec(
        lab.LAN,
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
        *firmware.args,
        "-drive",
        f"file={disk},if=virtio,format=raw",
        "-netdev",
        # vnet_hdr off: the kernel completes each frame's checksums before
        # the tap hands it to QEMU, as a real wire carries them (a capture
        # on the tap shows the proxy's port-4011 answers whole).  With it
        # on, QEMU may get a veth's partial UDP checksums, which it fills
        # in only for port 67.
        f"tap,id=n0,ifname={tap},script=no,downscript=no,vnet_hdr=off",
        "-device",
        f"{nic},netdev=n0,mac={mac},bootindex=1{options}",
    )
    started = time.monotonic()
    result = Boot(firmware, mac, VMRun(None, "", 0.0))

    def watch(text: str) -> bool:
        if result.at_pxed is None and at_pxed():
            result.at_pxed = round(time.monotonic() - started, 1)
        return stop_at_pxed and result.at_pxed is not None

    result.run = await spawn_vm(args, serial, timeout, watch)
    return result
