"""A DHCP relay agent's part, for the lab: a machine's DHCPDISCOVER (as
tests/bootnet/dhcpclient.py builds it) forwarded to a server with
``giaddr`` set to the relay's address on the machine's subnet, as a router
relays a rack that is not on pxed's wire.  The server answers the relay
(at giaddr, port 67); what it answers is printed as JSON lines.

Run it in the lab's LAN namespace, where the probe holds the relay's
addresses (tests/realnet/lab.py): ``python -m tests.realnet.relay
--giaddr 10.214.0.1 --server 10.213.0.2 --mac 52:54:00:12:34:56 --ipxe``."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from dataclasses import asdict

from tests.bootnet.dhcpclient import DISCOVER, Offer, collect, packet

SERVER_PORT = 67  # servers and relays both listen here


def relayed(
    server: str, giaddr: str, mac: str, *, arch: int | None, ipxe: bool, timeout: float
) -> list[Offer]:
    """The answers to a DHCPDISCOVER from *mac* relayed by *giaddr* to *server*."""
    xid = int.from_bytes(os.urandom(4), "big")
    message = bytearray(packet(DISCOVER, mac, xid, arch=arch, ipxe=ipxe))
    message[3] = 1  # hops: one relay
    message[24:28] = socket.inet_aton(giaddr)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", SERVER_PORT))
        s.sendto(bytes(message), (server, SERVER_PORT))
        return collect(s, xid, timeout, receive=_datagram)


def _datagram(s: socket.socket) -> tuple[str, bytes]:
    """The relay has its address: the server's answers are datagrams to it."""
    data, (host, _) = s.recvfrom(65535)
    return host, data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", required=True)
    p.add_argument("--giaddr", required=True)
    p.add_argument("--mac", required=True)
    p.add_argument("--arch", type=int, default=0, help="option 93; -1: none")
    p.add_argument("--ipxe", action="store_true", help="an iPXE client (options 77 and 175)")
    p.add_argument("--timeout", type=float, default=2.0)
    args = p.parse_args(argv)
    arch = None if args.arch < 0 else args.arch
    for offer in relayed(
        args.server, args.giaddr, args.mac, arch=arch, ipxe=args.ipxe, timeout=args.timeout
    ):
        print(json.dumps(asdict(offer)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
