"""pxed's proxyDHCP as machines see it: pxed runs the real dnsmasq on a
veth whose peer is in a network namespace, and tests/bootnet/dhcpclient.py
asks from there what PXE, UEFI, iPXE and UEFI HTTP boot firmware ask."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted

from tests.bootnet.dhcpclient import NO_ADDRESS
from tests.helpers import MAC, OTHER_MAC, add_machine, eventually, only_on

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
        (found,) = await bootlink.ask(MAC, *args, count=1)
        assert (found["yiaddr"], found["server"]) == (NO_ADDRESS, bootlink.address)
        return found

    await eventually(lambda: bootlink.ask(MAC, "--arch", "0", timeout=0.5, count=1))
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
        count=1,
    )
    assert (ack["file"], ack["siaddr"]) == ("undionly.kpxe", bootlink.address)
    # UEFI x86_64 (7 and 9): sent to port 4011, which names snponly.efi.
    for arch in ("7", "9"):
        uefi = await offer("--arch", arch)
        assert (uefi["file"], uefi["siaddr"]) == ("", bootlink.address)
        (ack,) = await bootlink.ask(
            MAC, "--arch", arch, "--boot-server", bootlink.address, "--client", client, count=1
        )
        assert (ack["file"], ack["siaddr"]) == ("snponly.efi", bootlink.address)
    # iPXE, whichever firmware it runs on: the chain URL.
    for arch in ("0", "7"):
        ipxe = await offer("--arch", arch, "--ipxe")
        # With pxed as next server: iPXE takes a proxy's file only beside
        # a siaddr (without one a BIOS iPXE ROM never chained).
        assert (ipxe["file"], ipxe["siaddr"]) == (f"{url}/ipxe", bootlink.address)
        # iPXE then asks the proxy's port 4011 (its ProxyDHCPREQUEST), and
        # takes the file from that answer: the chain URL again, no menu.
        (ack,) = await bootlink.ask(
            MAC, "--arch", arch, "--ipxe", "--boot-server", bootlink.address, "--client", client,
            count=1,
        )  # fmt: skip
        assert (ack["file"], ack["siaddr"], ack["menu"]) == (f"{url}/ipxe", bootlink.address, [])
    # UEFI HTTP boot: the EFI binary's URL, with HTTPClient said back.
    http = await offer("--arch", "16", "--http")
    assert (http["file"], http["vendor_class"]) == (f"{url}/boot/snponly.efi", "HTTPClient")
    # The files are Debian's, by TFTP.
    for name in ("undionly.kpxe", "snponly.efi"):
        into = tmp_path / name
        got = bootlink.run("curl", "-sS", f"tftp://{bootlink.address}/{name}", "-o", str(into))
        assert got.returncode == 0, got.stderr
        assert into.read_bytes() == (IPXE_DIR / name).read_bytes()


async def answered(bootlink, mac: str, *args: str) -> bool:
    return bool(await bootlink.ask(mac, "--arch", "0", *args, timeout=0.7, count=1))


@pytest_twisted.ensureDeferred
async def test_only_registered_machines_are_answered(start_server, bootlink, dnsmasq, logged):
    server = await proxy_server(start_server, bootlink)
    await add_machine(server, MAC)
    pid = server.pxed.bootnet.pid
    await eventually(lambda: answered(bootlink, MAC))
    assert not await answered(bootlink, OTHER_MAC)
    # Registered: dnsmasq reads its known MACs again (SIGHUP), no restart.
    await add_machine(server, OTHER_MAC, name="other")
    await eventually(lambda: answered(bootlink, OTHER_MAC))
    assert sum("known-macs" in line and "read " in line for line in logged) >= 2
    r = await server.admin.delete(f"/machine/{OTHER_MAC}")
    assert r.code in (200, 204), r.text
    await eventually(lambda: _not(answered(bootlink, OTHER_MAC)))
    assert await answered(bootlink, MAC)
    assert server.pxed.bootnet.pid == pid
    assert any("PXE(" in line and "proxy-ignored" in line for line in logged)


async def _not(check) -> bool:
    return not await check


@pytest_twisted.ensureDeferred
async def test_enlist_answers_every_mac(start_server, bootlink, dnsmasq):
    await proxy_server(start_server, bootlink, enlist=True)
    assert await answered(bootlink, OTHER_MAC, "--ipxe")


@pytest_twisted.ensureDeferred
async def test_a_subnet_outside_boot_networks_gets_nothing(start_server, bootlink, dnsmasq):
    server = await proxy_server(start_server, bootlink, boot_networks=["192.168.77.0/24"])
    await add_machine(server, MAC)
    await eventually(lambda: server.pxed.bootnet._known == f"{MAC}\n")
    assert not await answered(bootlink, MAC)
    assert not await answered(bootlink, MAC, "--ipxe")
    assert server.pxed.bootnet.state == "running"


@pytest_twisted.ensureDeferred
async def test_base_url_is_what_ipxe_chains_to(start_server, bootlink, dnsmasq):
    server = await proxy_server(start_server, bootlink, base_url="http://pxed.lab:8080/")
    await add_machine(server, MAC)
    await eventually(lambda: answered(bootlink, MAC))
    (offer,) = await bootlink.ask(MAC, "--arch", "7", "--ipxe", count=1)
    assert offer["file"] == "http://pxed.lab:8080/ipxe"
    (offer,) = await bootlink.ask(MAC, "--arch", "16", "--http", count=1)
    assert offer["file"] == "http://pxed.lab:8080/boot/snponly.efi"
