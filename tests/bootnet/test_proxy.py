"""pxed's proxyDHCP as machines see it: pxed runs the real dnsmasq on a
veth whose peer is in a network namespace, and tests/bootnet/dhcpclient.py
asks from there what PXE, UEFI, iPXE and UEFI HTTP boot firmware ask."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted

from tests.bootnet.dhcpclient import NO_ADDRESS
from tests.helpers import MAC, add_machine, eventually, only_on

pytestmark = only_on("sqlite", "dnsmasq reads the machines' MACs, not the database")

IPXE_DIR = Path("/usr/lib/ipxe")


async def proxy_server(start_server, bootlink, **settings):
    settings.setdefault("boot_dhcp", "proxy")
    settings.setdefault("boot_dhcp_interface", bootlink.server)
    server = await start_server(**settings)
    await eventually(lambda: server.pxed.bootnet.state == "running")
    await eventually(lambda: server.pxed.bootnet._process.ready)
    return server


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


@pytest_twisted.ensureDeferred
async def test_each_firmware_gets_its_boot_file(start_server, bootlink, dnsmasq, tmp_path):
    server = await proxy_server(start_server, bootlink)
    await add_machine(server, MAC)
    url = f"http://{bootlink.address}:{port_of(server)}"

    async def offer(*args: str) -> dict:
        offers = [o for o in await bootlink.ask(MAC, *args) if o["yiaddr"] == NO_ADDRESS]
        assert len(offers) == 1, offers
        assert offers[0]["server"] == bootlink.address
        return offers[0]

    await eventually(lambda: bootlink.ask_sync(MAC, "--arch", "0", timeout=0.5) != [])
    # BIOS: a one-item menu whose server is pxed's; that item, asked of
    # port 4011, is undionly.kpxe by TFTP from there.
    bios = await offer("--arch", "0")
    assert [text for _, text in bios["menu"]] == ["pxed: iPXE"]
    await bootlink.add_client_address(bootlink.address[:-1] + "50")
    client = bootlink.address[:-1] + "50"
    (ack,) = await bootlink.ask(
        MAC,
        "--arch",
        "0",
        "--boot-server",
        bootlink.address,
        "--client",
        client,
        "--item",
        str(bios["menu"][0][0]),
    )
    assert (ack["file"], ack["siaddr"]) == ("undionly.kpxe", bootlink.address)
    # UEFI x86_64 (7 and 9): sent to port 4011, which names snponly.efi.
    for arch in ("7", "9"):
        uefi = await offer("--arch", arch)
        assert (uefi["file"], uefi["siaddr"]) == ("", bootlink.address)
        (ack,) = await bootlink.ask(
            MAC, "--arch", arch, "--boot-server", bootlink.address, "--client", client
        )
        assert (ack["file"], ack["siaddr"]) == ("snponly.efi", bootlink.address)
    # iPXE, whichever firmware it runs on: the chain URL.
    for arch in ("0", "7"):
        ipxe = await offer("--arch", arch, "--ipxe")
        assert ipxe["file"] == f"{url}/ipxe"
    # UEFI HTTP boot: the EFI binary's URL, with HTTPClient said back.
    http = await offer("--arch", "16", "--http")
    assert (http["file"], http["vendor_class"]) == (f"{url}/boot/snponly.efi", "HTTPClient")
    # The files are Debian's, by TFTP.
    for name in ("undionly.kpxe", "snponly.efi"):
        into = tmp_path / name
        got = bootlink.run("curl", "-sS", f"tftp://{bootlink.address}/{name}", "-o", str(into))
        assert got.returncode == 0, got.stderr
        assert into.read_bytes() == (IPXE_DIR / name).read_bytes()
