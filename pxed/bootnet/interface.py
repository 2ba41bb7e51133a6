"""The boot interface: that it exists, and its IPv4 address and network
(the host of the URL iPXE chains to, and dnsmasq's proxy subnet)."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

# From <linux/sockios.h>.
SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B


class InterfaceError(Exception):
    """The interface is not there, or has no IPv4 address."""


def _ioctl(name: str, request: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        raw = fcntl.ioctl(s.fileno(), request, struct.pack("256s", name.encode()[:15]))
    return socket.inet_ntoa(raw[20:24])


def ipv4(name: str) -> ipaddress.IPv4Interface:
    """*name*'s (first) IPv4 address with its prefix."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        known = ", ".join(n for _, n in socket.if_nameindex())
        raise InterfaceError(f"no interface {name!r} on this host (there are: {known})") from None
    try:
        address = _ioctl(name, SIOCGIFADDR)
        netmask = _ioctl(name, SIOCGIFNETMASK)
    except OSError:
        raise InterfaceError(f"interface {name!r} has no IPv4 address") from None
    return ipaddress.IPv4Interface(f"{address}/{netmask}")
