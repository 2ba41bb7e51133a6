"""Which clients the boot routes answer: those on the ``boot_networks``,
by the address of the socket they connected from (never a header's).

Netboot is unauthenticated by nature; a machine credential is bound to the
address of its first BootInform, and ``metrics_networks`` admit scrapers
the same way, so those use the same address."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """A setting's CIDRs, parsed (config checked each entry)."""
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def client_address(request: Any) -> str | None:
    """The request's peer address (the socket's, not a header's), with an
    IPv4-mapped IPv6 address given as IPv4; None if it has no IP address."""
    host = getattr(request.getClientAddress(), "host", None)
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def on_network(address: str | None, allowed: Iterable[Network]) -> bool:
    if address is None:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in allowed)
