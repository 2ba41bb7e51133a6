"""``pxed-admin boot-network-config``: the lines a lab adds to its own DHCP
server, run in that server for real (dnsmasq handing out addresses, ISC
dhcpd) on a boot link, answering each kind of firmware as pxed's proxy
does."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pxed import admin
from tests.bootnet.dhcpclient import NO_ADDRESS
from tests.helpers import MAC, require_tool

URL = "http://pxed.lab:4848"


def printed(capsys, *args: str) -> str:
    assert admin.main(["boot-network-config", "--url", URL, *args]) == 0
    return capsys.readouterr().out


def lab_server(command: list[str], tmp_path: Path) -> subprocess.Popen:
    with open(tmp_path / "server.log", "w") as log:  # the child has its own copy
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    assert proc.poll() is None, (tmp_path / "server.log").read_text()
    return proc


def firmware_answers(bootlink) -> dict[str, dict]:
    """What each kind of firmware is offered, by the server that gives it
    an address."""
    asked = {
        "bios": ("--arch", "0"),
        "uefi": ("--arch", "7"),
        "ipxe": ("--arch", "0", "--ipxe"),
        "uefi-ipxe": ("--arch", "7", "--ipxe"),
        "http": ("--arch", "16", "--http"),
    }
    bootlink.set_client_mac(MAC)
    answers = {}
    for kind, args in asked.items():
        (offer,) = bootlink.ask_sync(MAC, *args, timeout=5, count=1)
        assert offer["yiaddr"] != NO_ADDRESS, (kind, offer)  # the lab's: an address
        answers[kind] = offer
    return answers


def check(answers: dict[str, dict], server: str) -> None:
    assert answers["bios"]["file"] == "undionly.kpxe"
    assert answers["uefi"]["file"] == "snponly.efi"
    for kind in ("bios", "uefi"):
        assert answers[kind]["siaddr"] == server  # the TFTP server
    assert answers["ipxe"]["file"] == answers["uefi-ipxe"]["file"] == f"{URL}/ipxe"
    assert answers["http"]["file"] == f"{URL}/boot/snponly.efi"
    assert answers["http"]["vendor_class"] == "HTTPClient"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_standalone_dnsmasq(bootlink, dnsmasq, tmp_path, capsys, database):
    net = bootlink.address.rsplit(".", 1)[0]
    conf = tmp_path / "lab.conf"
    conf.write_text(
        f"port=0\ninterface={bootlink.server}\nbind-interfaces\nno-hosts\nno-ping\n"
        f"dhcp-range={net}.100,{net}.150,5m\ndhcp-leasefile={tmp_path / 'leases'}\n"
        + printed(capsys, "--dnsmasq")
    )
    proc = lab_server(
        [dnsmasq, "-k", "--log-facility=-", "--pid-file", "--user=root", f"--conf-file={conf}"],
        tmp_path,
    )
    try:
        check(firmware_answers(bootlink), bootlink.address)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_standalone_isc_dhcp(bootlink, tmp_path, capsys, database):
    dhcpd = require_tool("dhcpd", "isc-dhcp-server")
    net = bootlink.address.rsplit(".", 1)[0]
    conf = tmp_path / "dhcpd.conf"
    conf.write_text(
        f"subnet {net}.0 netmask 255.255.255.0 {{\n  range {net}.100 {net}.150;\n}}\n"
        + printed(capsys, "--isc-dhcp", "--tftp-server", bootlink.address)
    )
    leases = tmp_path / "dhcpd.leases"
    leases.write_text("")
    pidfile = tmp_path / "pid"
    command = [dhcpd, "-f", "-4", "-cf", str(conf), "-lf", str(leases), "-pf", str(pidfile)]
    proc = lab_server([*command, bootlink.server], tmp_path)
    try:
        check(firmware_answers(bootlink), bootlink.address)
    finally:
        proc.terminate()
        proc.wait(10)
