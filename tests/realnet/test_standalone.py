"""A lab that keeps netbooting in its own DHCP server: the lab's dnsmasq
hands out addresses, serves Debian's iPXE over TFTP and points iPXE at
pxed's /ipxe; pxed answers HTTP only.  A VM on each firmware deploys its
image from power-on to power-off."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.realnet import labvm
from tests.realnet.deploys import assert_deployed, queue_deploy, record

FIRMWARE = {
    "bios-pxe": (labvm.BIOS_PXE, "52:54:00:d3:01:01", 1),
    "uefi-pxe": (labvm.UEFI_PXE, "52:54:00:d3:01:02", 2),
    "uefi-http": (labvm.UEFI_HTTP, "52:54:00:d3:01:03", 3),
}


@pytest.mark.parametrize("name", list(FIRMWARE))
@pytest_twisted.ensureDeferred
async def test_a_vm_deploys_through_the_labs_dhcp(standalone_lab, qemu, tmp_path, name):
    firmware, mac, seed = FIRMWARE[name]
    px = standalone_lab
    deploy = await queue_deploy(px, mac, seed, tmp_path)
    boot = await labvm.boot(
        qemu,
        firmware,
        tap="tap0",
        mac=mac,
        disk=deploy.disk,
        serial=tmp_path / "serial.log",
        at_pxed=px.asked(mac),
        timeout=300,
    )
    record(tmp_path, [boot])
    await assert_deployed(px, deploy, boot)
