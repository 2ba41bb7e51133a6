"""A boot link for tests: a network namespace (the machines' side) joined
by a veth pair to the namespace the tests run in (pxed's side), where the
veth has an address on a /24 of its own.  Names start with ``pxedt-``; the
fixture that makes one always removes it.  Needs root and iproute2."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import threads

from tests.helpers import missing, require_tool

REPO = Path(__file__).resolve().parents[2]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class BootLink:
    namespace: str
    server: str  # the veth pxed's dnsmasq listens on, in this namespace
    client: str  # its peer, in *namespace*
    address: str  # the server veth's address (its /24 is the boot network)

    @property
    def network(self) -> str:
        return self.address.rsplit(".", 1)[0] + ".0/24"

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            check=False,
        )

    def ask_sync(
        self, mac: str, *args: str, timeout: float = 1.5, count: int | None = None
    ) -> list[dict]:
        if count is not None:
            args = (*args, "--count", str(count))
        done = self.run(
            sys.executable,
            "-m",
            "tests.bootnet.dhcpclient",
            "--interface",
            self.client,
            "--mac",
            mac,
            "--timeout",
            str(timeout),
            *args,
        )
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    async def ask(
        self, mac: str, *args: str, timeout: float = 1.5, count: int | None = None
    ) -> list[dict]:
        """The answers a machine with *mac* gets to a DHCPDISCOVER (or, with
        ``--boot-server``, a request to port 4011) within *timeout* seconds,
        or its first *count*: dhcpclient's options."""
        return await threads.deferToThread(self.ask_sync, mac, *args, timeout=timeout, count=count)

    def set_client_mac(self, mac: str) -> None:
        """The client veth answers to *mac*: a DHCP server that sends its
        offer to the MAC asking (unicast) reaches it."""
        _ip("-n", self.namespace, "link", "set", self.client, "address", mac)

    async def add_client_address(self, address: str) -> None:
        await threads.deferToThread(
            _ip, "-n", self.namespace, "addr", "add", f"{address}/24", "dev", self.client
        )


def make_link() -> BootLink:
    if os.geteuid() != 0:
        missing("the boot-network tests make network namespaces: run them as root")
    require_tool("ip", "iproute2")
    tag = secrets.token_hex(2)
    return BootLink(
        namespace=f"pxedt-{tag}",
        server=f"pxedt-{tag}s",
        client=f"pxedt-{tag}c",
        address=f"10.213.{secrets.randbelow(250) + 1}.1",
    )


def create(link: BootLink) -> None:
    _ip("netns", "add", link.namespace)
    _ip("link", "add", link.server, "type", "veth", "peer", "name", link.client)
    _ip("link", "set", link.client, "netns", link.namespace)
    _ip("addr", "add", f"{link.address}/24", "dev", link.server)
    _ip("link", "set", link.server, "up")
    _ip("-n", link.namespace, "link", "set", link.client, "up")
    _ip("-n", link.namespace, "link", "set", "lo", "up")


def remove(link: BootLink) -> None:
    # Deleting one end of a veth deletes both; the namespace last.
    subprocess.run(["ip", "link", "del", link.server], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", link.namespace], capture_output=True, check=False)
