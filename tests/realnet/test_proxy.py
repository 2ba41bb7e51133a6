"""A lab whose DHCP server knows nothing of netbooting (addresses only)
and pxed answering the boot network itself (``boot_dhcp = "proxy"``):
its dnsmasq's proxyDHCP and TFTP take each firmware to pxed's /ipxe.

The VM scenarios share one boot (TCG is slow, CI time counts): pxed's
dnsmasq is killed with SIGKILL, and once pxed has restarted it, four VMs
are powered on at once, BIOS PXE (virtio and e1000), UEFI PXE and UEFI
HTTP boot, each with an image of its own queued.  Each test checks what
a user of it would: that firmware's machine is deployed in pxed's API and
its disk holds its image."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import pytest
import pytest_twisted

from tests.bootnet.dhcpclient import NO_ADDRESS
from tests.helpers import add_machine
from tests.realnet import lab, labpxed, labvm
from tests.realnet.deploys import Deploy, assert_deployed, boot_at_once, queue_deploy
from tests.realnet.labdhcp import LabDHCP
from tests.realnet.labpxed import LabPxed
from tests.realnet.labvm import Boot, Firmware

VMS: tuple[tuple[Firmware, str], ...] = (
    (labvm.BIOS_PXE, "52:54:00:d3:02:01"),
    (labvm.BIOS_E1000, "52:54:00:d3:02:02"),
    (labvm.UEFI_PXE, "52:54:00:d3:02:03"),
    (labvm.UEFI_HTTP, "52:54:00:d3:02:04"),
)


def proxy_offers(mac: str, *args: str) -> list[dict]:
    """What pxed (not the lab's DHCP server) answers *mac*'s DHCPDISCOVER."""
    offers = lab.ask(mac, *args)
    assert any(o["yiaddr"] != NO_ADDRESS for o in offers), "the lab's DHCP server did not answer"
    return [o for o in offers if o["server"] == lab.PXED_ADDRESS]


@pytest.fixture(scope="module")
def module_proxy_lab(lab_dhcp: LabDHCP, proxy_pxed: LabPxed) -> LabPxed:
    """conftest's proxy_lab, for the module's shared boot."""
    lab_dhcp.serve_plain()
    return proxy_pxed


@dataclass
class SharedBoot:
    killed_pid: int
    restarted_pid: int
    deploys: dict[str, Deploy]  # by firmware name
    boots: dict[str, Boot]


@pytest_twisted.async_fixture(scope="module")
async def shared_boot(module_proxy_lab: LabPxed, qemu: str, tmp_path_factory) -> SharedBoot:
    """The four machines queued their images, pxed's dnsmasq killed and
    restarted, then the four VMs powered on together and run until each
    powers off (or times out): the tests look at the outcome."""
    px = module_proxy_lab
    tmp_path = tmp_path_factory.mktemp("proxy-vms")
    deploys = [await queue_deploy(px, mac, seed, tmp_path) for seed, (_, mac) in enumerate(VMS)]
    # dnsmasq answers a MAC once pxed has written it to the known list.
    first_mac = VMS[0][1]
    labpxed.wait_until(lambda: bool(proxy_offers(first_mac, "--ipxe")), px, 20)
    killed = px.dnsmasq_pid()
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    labpxed.wait_until(lambda: px.dnsmasq_pid() not in (None, killed), px)
    labpxed.wait_until(lambda: px.healthz().get("boot_dhcp") == "running", px)
    restarted = px.dnsmasq_pid()
    assert restarted is not None
    pairs = [(firmware, deploy) for (firmware, _), deploy in zip(VMS, deploys, strict=True)]
    boots = await boot_at_once(px, qemu, tmp_path, pairs)
    return SharedBoot(
        killed,
        restarted,
        {f.name: d for (f, _), d in zip(VMS, deploys, strict=True)},
        {f.name: b for (f, _), b in zip(VMS, boots, strict=True)},
    )


async def assert_firmware_deployed(px: LabPxed, shared: SharedBoot, firmware: Firmware) -> None:
    boot = shared.boots[firmware.name]
    assert boot.at_pxed is not None, f"{firmware.name} never asked pxed for its answer"
    await assert_deployed(px, shared.deploys[firmware.name], boot)


@pytest_twisted.ensureDeferred
async def test_bios_pxe_deploys_through_the_proxy(module_proxy_lab, shared_boot):
    """SeaBIOS's iPXE ROM: the proxy's answer at port 4011, then iPXE's
    own DHCP, the chain URL, /ipxe/<mac>, the management OS."""
    await assert_firmware_deployed(module_proxy_lab, shared_boot, labvm.BIOS_PXE)


@pytest_twisted.ensureDeferred
async def test_uefi_pxe_deploys_through_the_proxy(module_proxy_lab, shared_boot):
    """OVMF's PXE: the proxy's TFTP hands it snponly.efi, which chains."""
    await assert_firmware_deployed(module_proxy_lab, shared_boot, labvm.UEFI_PXE)


@pytest_twisted.ensureDeferred
async def test_uefi_http_boot_deploys_through_the_proxy(module_proxy_lab, shared_boot):
    """OVMF's HTTP boot: the proxy's offer names pxed's /boot/snponly.efi."""
    await assert_firmware_deployed(module_proxy_lab, shared_boot, labvm.UEFI_HTTP)


@pytest_twisted.ensureDeferred
async def test_four_machines_powered_on_at_once_each_get_their_own_image(
    module_proxy_lab, shared_boot
):
    """All four (the e1000 BIOS machine too) are deployed, each disk with
    its own machine's image, none another's."""
    for firmware, _ in VMS:
        await assert_firmware_deployed(module_proxy_lab, shared_boot, firmware)
    assert len({d.sha256 for d in shared_boot.deploys.values()}) == len(VMS)


@pytest_twisted.ensureDeferred
async def test_a_killed_dnsmasq_is_restarted_and_the_next_boots_work(module_proxy_lab, shared_boot):
    """kill -9 of pxed's dnsmasq: pxed says so, starts another, and the
    machines powered on after it deploy through that one."""
    px = module_proxy_lab
    assert shared_boot.restarted_pid != shared_boot.killed_pid
    assert "dnsmasq was killed by signal 9" in px.log.read_text()
    assert px.healthz()["boot_dhcp"] == "running"
    for firmware, _ in VMS:
        await assert_firmware_deployed(px, shared_boot, firmware)


@pytest_twisted.ensureDeferred
async def test_an_unknown_mac_gets_nothing_from_the_proxy(proxy_lab):
    """enlist is off: a MAC pxed does not know is left to the lab (its
    address) and its local disk; a registered one, asked the same, gets
    pxed's answer."""
    known, unknown = "52:54:00:d3:03:01", "52:54:00:d3:03:02"
    await add_machine(proxy_lab, known, name="known")
    labpxed.wait_until(lambda: bool(proxy_offers(known, "--arch", "0")), proxy_lab, 20)
    for args in (("--arch", "0"), ("--arch", "7"), ("--http", "--arch", "16"), ("--ipxe",)):
        assert proxy_offers(unknown, *args) == [], args
    assert proxy_offers(known, "--ipxe")[0]["file"] == f"{proxy_lab.lab_url}/ipxe"


@pytest_twisted.ensureDeferred
async def test_a_rack_outside_boot_networks_gets_nothing_from_the_proxy(proxy_lab):
    """A relay forwards two racks' DHCP to pxed: a registered machine in
    the rack on boot_networks gets the proxy's answer, the same machine in
    the rack outside them nothing, whatever firmware it says it is."""
    mac = "52:54:00:d3:05:01"
    await add_machine(proxy_lab, mac, name="racked")
    labpxed.wait_until(
        lambda: bool(lab.ask_relayed(lab.RELAYED_RACK, mac, "--ipxe")), proxy_lab, 20
    )
    for args in (("--arch", "0"), ("--arch", "7"), ("--ipxe",)):
        assert lab.ask_relayed(lab.OTHER_RACK, mac, *args) == [], args
    answer = lab.ask_relayed(lab.RELAYED_RACK, mac, "--ipxe")
    assert answer[0]["file"] == f"{proxy_lab.lab_url}/ipxe"
