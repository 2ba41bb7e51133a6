"""A small DHCP client for the boot-network tests: it sends what a
netbooting machine's firmware sends (DHCPDISCOVER with the client
architecture, 93; the vendor class, 60; iPXE's user class, 77, and its
option 175) from a UDP socket bound to one interface, and collects every
offer that comes back, as a PXE ROM would before choosing.  It can also ask
a proxyDHCP server's port 4011, as UEFI PXE firmware does after an offer
that points it there.

Run it inside a network namespace (``ip netns exec NS python -m
tests.bootnet.dhcpclient --interface veth0 --mac 52:54:00:12:34:56 --arch
7``): it prints the offers as JSON lines."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

COOKIE = b"\x63\x82\x53\x63"
NO_ADDRESS = "0.0.0.0"  # noqa: S104 (an address field's "none", not a bind)
DISCOVER, OFFER, REQUEST, ACK = 1, 2, 3, 5
# The architectures of RFC 4578 and the IANA registry that tests send.
BIOS, EFI_IA32, EFI_X64, EFI_BC, EFI_X64_HTTP = 0, 6, 7, 9, 16
# What each kind of firmware says in option 60.
PXE_VENDOR = "PXEClient:Arch:{arch:05d}:UNDI:002001"
HTTP_VENDOR = "HTTPClient:Arch:{arch:05d}:UNDI:003001"


@dataclass
class Offer:
    """One answer: who sent it and what it tells the client to boot."""

    kind: int
    server: str  # option 54, the server identifier
    sender: str  # the packet's source address
    yiaddr: str
    siaddr: str
    file: str
    sname: str
    vendor_class: str | None
    options: dict[int, str] = field(default_factory=dict)  # hex

    @property
    def proxy(self) -> bool:
        """A proxyDHCP answer: boot information and no address."""
        return self.yiaddr == NO_ADDRESS


def _options(pairs: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(COOKIE)
    for code, value in pairs:
        out += bytes([code, len(value)]) + value
    out.append(255)
    return bytes(out)


def packet(
    kind: int,
    mac: str,
    xid: int,
    *,
    arch: int | None = BIOS,
    vendor_class: str | None = None,
    ipxe: bool = False,
    ciaddr: str = NO_ADDRESS,
    extra: tuple[tuple[int, bytes], ...] = (),
) -> bytes:
    """A BOOTREQUEST as firmware sends it (broadcast flag set)."""
    chaddr = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(chaddr) != 6:
        raise ValueError(f"not a MAC: {mac!r}")
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1,
        1,
        6,
        0,
        xid,
        0,
        0x8000,
        socket.inet_aton(ciaddr),
        bytes(4),
        bytes(4),
        bytes(4),
        chaddr + bytes(10),
        bytes(64),
        bytes(128),
    )
    opts: list[tuple[int, bytes]] = [(53, bytes([kind]))]
    if vendor_class is None and arch is not None:
        vendor_class = PXE_VENDOR.format(arch=arch)
    if vendor_class is not None:
        opts.append((60, vendor_class.encode()))
    if arch is not None:
        opts += [(93, struct.pack("!H", arch)), (94, bytes([1, 3, 16]))]
        opts.append((97, bytes(1) + chaddr + bytes(10)))  # the machine's UUID
    if ipxe:
        opts += [(77, b"iPXE"), (175, bytes([0xB1, 1, 1]))]
    opts.append((55, bytes([1, 3, 6, 43, 54, 60, 66, 67, 97, 175])))
    opts += list(extra)
    return header + _options(opts)


def parse(data: bytes, sender: str) -> Offer | None:
    if len(data) < 240 or data[0] != 2 or data[236:240] != COOKIE:
        return None
    yiaddr, siaddr = data[16:20], data[20:24]
    sname, file = data[44:108], data[108:236]
    options: dict[int, bytes] = {}
    i = 240
    while i < len(data):
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(data):
            break
        length = data[i + 1]
        options[code] = options.get(code, b"") + data[i + 2 : i + 2 + length]
        i += 2 + length
    kind = options.get(53, b"\0")[0]
    server = options.get(54)

    def text(raw: bytes) -> str:
        return raw.split(b"\0", 1)[0].decode(errors="replace")

    return Offer(
        kind=kind,
        server=socket.inet_ntoa(server) if server and len(server) == 4 else "",
        sender=sender,
        yiaddr=socket.inet_ntoa(yiaddr),
        siaddr=socket.inet_ntoa(siaddr),
        file=text(file) or text(options.get(67, b"")),
        sname=text(sname),
        vendor_class=text(options[60]) if 60 in options else None,
        options={k: v.hex() for k, v in options.items()},
    )


def menu(offer: Offer) -> list[tuple[int, str]]:
    """The PXE boot menu in an offer's option 43 (sub-option 9): each item's
    type and text."""
    raw = bytes.fromhex(offer.options.get(43, ""))
    items = []
    i = 0
    while i + 1 < len(raw) and raw[i] != 255:
        code, length = raw[i], raw[i + 1]
        value = raw[i + 2 : i + 2 + length]
        if code == 9:
            j = 0
            while j + 3 <= len(value):
                kind, size = struct.unpack("!HB", value[j : j + 3])
                items.append((kind, value[j + 3 : j + 3 + size].decode(errors="replace")))
                j += 3 + size
        i += 2 + length
    return items


def _socket(interface: str, port: int) -> socket.socket:
    """What the requests go out of (and what keeps the port taken, so the
    kernel answers no offer with ICMP)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    s.bind(("", port))
    return s


def _listener(interface: str) -> socket.socket:
    """Every IPv4 frame on *interface*: a server may send its offer to the
    offered address, which the interface does not have yet (as real
    firmware, the client reads the frames, not a UDP socket)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    s.bind((interface, 0))
    return s


def _udp_to_client(frame: bytes) -> tuple[str, bytes] | None:
    """(source address, payload) of a UDP datagram to port 68 in *frame*."""
    ip = frame[14:]
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    udp = ip[(ip[0] & 15) * 4 :]
    if len(udp) < 8 or struct.unpack("!H", udp[2:4])[0] != 68:
        return None
    return socket.inet_ntoa(ip[12:16]), udp[8 : struct.unpack("!H", udp[4:6])[0]]


def _frame_to_client(s: socket.socket) -> tuple[str, bytes] | None:
    return _udp_to_client(s.recv(65535))


def collect(
    s: socket.socket,
    xid: int,
    timeout: float,
    count: int | None = None,
    receive: Callable[[socket.socket], tuple[str, bytes] | None] = _frame_to_client,
) -> list[Offer]:
    """The offers to *xid* within *timeout* seconds, or the first *count*;
    *receive* reads one (sender, DHCP message) from *s* (default: a frame
    of a raw socket, as a client without an address reads them)."""
    offers: list[Offer] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0 and len(offers) != count:
        ready, _, _ = select.select([s], [], [], left)
        if not ready:
            break
        found = receive(s)
        if found is None:
            continue
        host, data = found
        offer = parse(data, host)
        if offer is not None and struct.unpack("!I", data[4:8])[0] == xid:
            offers.append(offer)
    return offers


def discover(
    interface: str,
    mac: str,
    *,
    arch: int | None = BIOS,
    vendor_class: str | None = None,
    ipxe: bool = False,
    timeout: float = 2.0,
    count: int | None = None,
) -> list[Offer]:
    """Every offer to a DHCPDISCOVER broadcast on *interface* within
    *timeout* seconds (the lab's and any proxy's), or the first *count*."""
    xid = int.from_bytes(os.urandom(4), "big")
    with _listener(interface) as frames, _socket(interface, 68) as s:
        message = packet(DISCOVER, mac, xid, arch=arch, vendor_class=vendor_class, ipxe=ipxe)
        s.sendto(message, ("255.255.255.255", 67))
        return collect(frames, xid, timeout, count)


def boot_server(
    interface: str,
    mac: str,
    server: str,
    client: str,
    *,
    arch: int = EFI_X64,
    vendor_class: str | None = None,
    item: int | None = None,
    ipxe: bool = False,
    timeout: float = 2.0,
    count: int | None = None,
) -> list[Offer]:
    """The answer of *server*'s port 4011 to the DHCPREQUEST that PXE
    firmware sends there from its address *client* (which the interface
    must have): UEFI firmware after an offer that names no file, BIOS
    firmware for the menu *item* it chose (``menu``)."""
    ipaddress.IPv4Address(client)
    xid = int.from_bytes(os.urandom(4), "big")
    extra = []
    if item is not None:  # PXE_BOOT_ITEM: the item's type, layer 0
        extra.append((43, bytes([71, 4]) + struct.pack("!HH", item, 0) + b"\xff"))
    with _listener(interface) as frames, _socket(interface, 68) as s:
        message = packet(
            REQUEST,
            mac,
            xid,
            arch=arch,
            vendor_class=vendor_class,
            ciaddr=client,
            extra=extra,
            ipxe=ipxe,
        )
        s.sendto(message, (server, 4011))
        return collect(frames, xid, timeout, count)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--interface", required=True)
    p.add_argument("--mac", required=True)
    p.add_argument("--arch", type=int, default=BIOS, help="option 93; -1: none")
    p.add_argument("--vendor-class", help="option 60 [PXEClient:Arch:<arch>:…]")
    p.add_argument("--http", action="store_true", help="a UEFI HTTP boot client (HTTPClient)")
    p.add_argument("--ipxe", action="store_true", help="an iPXE client (options 77 and 175)")
    p.add_argument("--boot-server", help="ask this server's port 4011 instead")
    p.add_argument("--client", help="with --boot-server: the interface's address")
    p.add_argument("--item", type=int, help="with --boot-server: the menu item's type")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for offers")
    p.add_argument("--count", type=int, help="stop at this many offers")
    args = p.parse_args(argv)
    arch = None if args.arch < 0 else args.arch
    vendor = args.vendor_class
    if args.http and vendor is None:
        vendor = HTTP_VENDOR.format(arch=arch or 0)
    if args.boot_server:
        offers = boot_server(
            args.interface,
            args.mac,
            args.boot_server,
            args.client,
            arch=EFI_X64 if arch is None else arch,
            vendor_class=vendor,
            item=args.item,
            ipxe=args.ipxe,
            timeout=args.timeout,
            count=args.count,
        )
    else:
        offers = discover(
            args.interface,
            args.mac,
            arch=arch,
            vendor_class=vendor,
            ipxe=args.ipxe,
            timeout=args.timeout,
            count=args.count,
        )
    for offer in offers:
        print(json.dumps(asdict(offer) | {"menu": menu(offer)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
