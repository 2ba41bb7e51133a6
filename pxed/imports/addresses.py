"""Where an import may connect: a URL's host is resolved once, every address
it resolves to is checked, and the connection goes to a checked address,
never to the name again.  A name that resolves to a public address when
looked at and to 127.0.0.1 when connected to (DNS rebinding) so gets
nowhere, and each redirect hop, being a new connection, is checked the
same way.

Unless ``import_allow_private`` is set, loopback, private, link-local,
multicast, reserved and unspecified addresses are refused (the server's own
ports, a lab's BMCs, a cloud's metadata service at 169.254.169.254), except
in the networks ``import_allow_networks`` names (a lab's own mirror)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.web.client import URI
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from pxed.workers import ThreadPoolService

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

CONNECT_TIMEOUT = 30


class Refused(Exception):
    """The URL's host is somewhere imports may not go; the message says
    which address and why."""


class AddressPolicy:
    def __init__(self, allow_private: bool, allowed: Sequence[str] = ()) -> None:
        self._allow_private = allow_private
        self._allowed: list[Network] = [ipaddress.ip_network(n, strict=False) for n in allowed]

    def why_not(self, address: Address) -> str | None:
        """What kind of address *address* is that imports may not connect
        to ("a loopback address"); None if they may."""
        if self._allow_private:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in n for n in self._allowed):
            return None
        for kind, flag in (
            ("a loopback", address.is_loopback),
            ("a link-local", address.is_link_local),
            ("a multicast", address.is_multicast),
            ("an unspecified", address.is_unspecified),
            ("a private", address.is_private),
            ("a reserved", address.is_reserved),
        ):
            if flag:
                return f"{kind} address"
        if not address.is_global:
            return "not a public address"
        return None

    def check(self, host: str, addresses: Sequence[Address]) -> Address:
        """The address to connect to for *host*: the first it resolved to,
        if none of them is refused (a name that also resolves to a private
        address is refused whole, whichever one a connection would get)."""
        if not addresses:
            raise Refused(f"{host} does not resolve to any address")
        for address in addresses:
            why = self.why_not(address)
            if why is not None:
                setting = "(import_allow_private is off)"
                if host == str(address):
                    raise Refused(f"{address} is {why} {setting}")
                raise Refused(f"{host} resolves to {address}, {why} {setting}")
        return addresses[0]


def _resolve(host: str, port: int) -> list[Address]:
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[Address] = []
    for _, _, _, _, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    return seen


@implementer(IStreamClientEndpoint)
class CheckedEndpoint:
    """Resolves, checks and connects to the checked address; TLS (for
    https) verifies the certificate against the URL's host name."""

    def __init__(self, reactor, pool: ThreadPoolService, policy: AddressPolicy, uri: URI) -> None:
        self._reactor = reactor
        self._pool = pool
        self._policy = policy
        self._uri = uri

    def connect(self, factory) -> Deferred:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory):
        host = self._uri.host.decode("ascii")
        try:
            found = await self._pool.run(_resolve, host, self._uri.port)
        except (socket.gaierror, UnicodeError) as e:
            raise Refused(f"{host} does not resolve: {e}") from None
        address = self._policy.check(host, found)
        kind = TCP6ClientEndpoint if address.version == 6 else TCP4ClientEndpoint
        endpoint: IStreamClientEndpoint = kind(
            self._reactor, str(address), self._uri.port, timeout=CONNECT_TIMEOUT
        )
        if self._uri.scheme == b"https":
            endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
        return await endpoint.connect(factory)


@implementer(IAgentEndpointFactory)
class CheckedEndpoints:
    def __init__(self, reactor, pool: ThreadPoolService, policy: AddressPolicy) -> None:
        self._reactor = reactor
        self._pool = pool
        self._policy = policy

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return CheckedEndpoint(self._reactor, self._pool, self._policy, uri)
