"""A lab whose DHCP server knows nothing of netbooting (addresses only)
and pxed answering the boot network itself (``boot_dhcp = "proxy"``):
its dnsmasq's proxyDHCP and TFTP take each firmware to pxed's /ipxe."""

from __future__ import annotations

import os
import signal

import pytest_twisted

from tests.bootnet.dhcpclient import NO_ADDRESS
from tests.helpers import add_machine
from tests.realnet import lab, labpxed


def proxy_offers(mac: str, *args: str) -> list[dict]:
    """What pxed (not the lab's DHCP server) answers *mac*'s DHCPDISCOVER."""
    offers = lab.ask(mac, *args)
    assert any(o["yiaddr"] != NO_ADDRESS for o in offers), "the lab's DHCP server did not answer"
    return [o for o in offers if o["server"] == lab.PXED_ADDRESS]


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
async def test_a_killed_dnsmasq_is_restarted_and_answers_again(proxy_lab):
    """kill -9 of pxed's dnsmasq: pxed says so, starts it again, and the
    next machine to ask gets its answer.  (A VM booting its BIOS iPXE ROM
    through pxed's proxy got its address and the proxy's PXE answer but
    never fetched /ipxe here: see the report; the DHCP client asks.)"""
    px = proxy_lab
    mac = "52:54:00:d3:04:01"
    await add_machine(px, mac, name="after-kill")
    labpxed.wait_until(lambda: bool(proxy_offers(mac, "--ipxe")), px, 20)
    first = px.dnsmasq_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    labpxed.wait_until(lambda: px.dnsmasq_pid() not in (None, first), px)
    labpxed.wait_until(lambda: px.healthz().get("boot_dhcp") == "running", px)
    assert "dnsmasq was killed by signal 9" in px.log.read_text()
    labpxed.wait_until(lambda: bool(proxy_offers(mac, "--ipxe")), px, 20)
    assert proxy_offers(mac, "--ipxe")[0]["file"] == f"{px.lab_url}/ipxe"
