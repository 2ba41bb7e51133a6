"""A lab that keeps netbooting in its own DHCP server: the lab's dnsmasq
hands out addresses and carries what ``pxed-admin boot-network-config``
gives it (TFTP of Debian's iPXE, the chain to pxed's /ipxe, pxed's
/boot/snponly.efi for UEFI HTTP boot); pxed answers HTTP only.  A VM on
each firmware, powered on together, deploys its image."""

from __future__ import annotations

import pytest_twisted

from tests.realnet import labvm
from tests.realnet.deploys import deploy_at_once


@pytest_twisted.ensureDeferred
async def test_each_firmware_deploys_through_the_labs_own_dhcp(standalone_lab, qemu, tmp_path):
    vms = [
        (labvm.BIOS_PXE, "52:54:00:d3:01:01"),
        (labvm.UEFI_PXE, "52:54:00:d3:01:02"),
        (labvm.UEFI_HTTP, "52:54:00:d3:01:03"),
    ]
    await deploy_at_once(standalone_lab, qemu, tmp_path, vms)
