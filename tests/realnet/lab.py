"""The lab's network: three network namespaces joined by a bridge, and
tap devices on it for QEMU VMs, all named ``pxedt-…``.

    pxedt-lan   the bridge (br0) and the VMs' taps (tap0…); QEMU runs here;
                and probe, a veth on the bridge from which the tests' DHCP
                client (tests/bootnet/dhcpclient.py) asks what firmware asks,
                and which holds a relay agent's addresses (tests/realnet/
                relay.py): RELAY on the boot wire, and its legs on two
                racks behind it, RELAYED_RACK and OTHER_RACK
    pxedt-dhcp  the lab's own DHCP server, lan0 = DHCP_ADDRESS
    pxedt-pxed  pxed (and its dnsmasq), lan0 = PXED_ADDRESS, and api0, the
                far end of the veth pxedt-api through which the tests (in
                the host's namespace) reach pxed's API

No namespace has a default route (pxed's has routes to the two racks via
the relay, so it can answer one) and the host forwards nothing into the
lab's subnet (it has no route there): what the VMs send stays on the
bridge, and the test process reaches only pxed's API address."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import require_tool

LAN = "pxedt-lan"
DHCP = "pxedt-dhcp"
PXED = "pxedt-pxed"
NAMESPACES = (LAN, DHCP, PXED)
API_LINK = "pxedt-api"

SUBNET = ipaddress.IPv4Network("10.213.0.0/24")
DHCP_ADDRESS = "10.213.0.1"
PXED_ADDRESS = "10.213.0.2"
# What the lab's DHCP server hands out.
POOL = ("10.213.0.100", "10.213.0.199")
# The point-to-point link between the host and pxed's namespace.
API_HOST = "10.213.255.1"
API_PXED = "10.213.255.2"
# The name of the lab-side interface in the DHCP server's and pxed's namespaces.
LAB_INTERFACE = "lan0"
BRIDGE = "br0"
TAPS = tuple(f"tap{i}" for i in range(4))
PROBE = "probe"
# A relay agent on the boot wire, for two racks pxed's wire does not reach:
# one on boot_networks, one not (its leg on each is the rack's giaddr).
RELAY = "10.213.0.250"
RELAYED_RACK = ipaddress.IPv4Interface("10.213.1.1/24")
OTHER_RACK = ipaddress.IPv4Interface("10.214.0.1/24")


def ip_tool() -> str:
    return require_tool("ip", "iproute2")


def ip(*args: str) -> str:
    """``ip ARGS``; its output, or an error that says what failed."""
    done = subprocess.run([ip_tool(), *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def netns_exec(namespace: str, *argv: str) -> list[str]:
    """The command line running *argv* inside *namespace*."""
    return [ip_tool(), "netns", "exec", namespace, *argv]


def _namespaces() -> set[str]:
    return {line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()}


def remove() -> None:
    """Everything a lab left behind, this run's or one a killed run left:
    the processes still inside its namespaces (its dnsmasqs, pxed, VMs:
    nothing else runs there), the namespaces, and the API link."""
    present = _namespaces() & set(NAMESPACES)
    for namespace in present:
        for pid in ip("netns", "pids", namespace).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for namespace in present:
        # A killed process leaves the namespace a moment after the signal.
        for _ in range(50):
            if not ip("netns", "pids", namespace).split():
                break
            time.sleep(0.1)
        ip("netns", "delete", namespace)
    if subprocess.run([ip_tool(), "link", "show", API_LINK], capture_output=True).returncode == 0:
        ip("link", "delete", API_LINK)


def build() -> None:
    """The namespaces, the bridge with the DHCP server's and pxed's veths
    and the taps on it, and the API link; addresses on each end."""
    for namespace in NAMESPACES:
        ip("netns", "add", namespace)
        ip("-n", namespace, "link", "set", "lo", "up")
    ip("-n", LAN, "link", "add", BRIDGE, "type", "bridge")
    # Forward at once: a port waits for no spanning-tree decision.
    ip("-n", LAN, "link", "set", BRIDGE, "type", "bridge", "forward_delay", "0")
    ip("-n", LAN, "link", "set", BRIDGE, "up")
    prefix = SUBNET.prefixlen
    for namespace, address in ((DHCP, DHCP_ADDRESS), (PXED, PXED_ADDRESS)):
        port = namespace.removeprefix("pxedt-")
        peer = ("peer", LAB_INTERFACE, "netns", namespace)
        ip("-n", LAN, "link", "add", port, "type", "veth", *peer)
        ip("-n", LAN, "link", "set", port, "master", BRIDGE, "up")
        ip("-n", namespace, "addr", "add", f"{address}/{prefix}", "dev", LAB_INTERFACE)
        ip("-n", namespace, "link", "set", LAB_INTERFACE, "up")
    for tap in TAPS:
        ip("-n", LAN, "tuntap", "add", tap, "mode", "tap")
        ip("-n", LAN, "link", "set", tap, "master", BRIDGE, "up")
    ip("-n", LAN, "link", "add", PROBE, "type", "veth", "peer", "probe0")
    ip("-n", LAN, "link", "set", "probe0", "master", BRIDGE, "up")
    ip("-n", LAN, "link", "set", PROBE, "up")
    ip("-n", LAN, "addr", "add", f"{RELAY}/{prefix}", "dev", PROBE)
    for rack in (RELAYED_RACK, OTHER_RACK):
        ip("-n", LAN, "addr", "add", str(rack), "dev", PROBE)
        ip("-n", PXED, "route", "add", str(rack.network), "via", RELAY)
    ip("link", "add", API_LINK, "type", "veth", "peer", "api0", "netns", PXED)
    ip("addr", "add", f"{API_HOST}/30", "dev", API_LINK)
    ip("link", "set", API_LINK, "up")
    ip("-n", PXED, "addr", "add", f"{API_PXED}/30", "dev", "api0")
    ip("-n", PXED, "link", "set", "api0", "up")


def routes(namespace: str) -> str:
    """*namespace*'s IPv4 routing table, as ``ip route`` shows it."""
    return ip("-n", namespace, "route", "show")


def _module(module: str, *args: str, timeout: float) -> list[dict]:
    """The JSON lines ``python -m module args`` prints, run in the LAN
    namespace (where the probe is)."""
    done = subprocess.run(
        netns_exec(LAN, sys.executable, "-m", module, *args),
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def ask(mac: str, *args: str, timeout: float = 2.0) -> list[dict]:
    """The offers a machine *mac* gets to a DHCPDISCOVER on the lab's wire
    (tests/bootnet/dhcpclient.py's, *args* say which firmware it is): the
    probe veth takes *mac*, as a server may answer the MAC (unicast)."""
    ip("-n", LAN, "link", "set", PROBE, "address", mac)
    return _module(
        "tests.bootnet.dhcpclient",
        "--interface",
        PROBE,
        "--mac",
        mac,
        "--timeout",
        str(timeout),
        *args,
        timeout=timeout,
    )


def ask_relayed(
    rack: ipaddress.IPv4Interface, mac: str, *args: str, timeout: float = 2.0
) -> list[dict]:
    """What pxed answers a DHCPDISCOVER of *mac*'s that the relay forwards
    from *rack* (giaddr its address there; tests/realnet/relay.py's *args*
    say which firmware it is)."""
    return _module(
        "tests.realnet.relay",
        "--server",
        PXED_ADDRESS,
        "--giaddr",
        str(rack.ip),
        "--mac",
        mac,
        "--timeout",
        str(timeout),
        *args,
        timeout=timeout,
    )
