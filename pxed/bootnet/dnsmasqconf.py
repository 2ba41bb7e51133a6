"""dnsmasq's configuration for pxed's proxyDHCP, rendered from the settings.

How dnsmasq 2.90 (Debian 12) answers, read from its source (rfc2131.c) and
checked with tests/bootnet/dhcpclient.py:

- Proxy mode (``dhcp-range=<net>,proxy``) answers only PXE clients: option
  60 starting with one of ``dhcp-pxe-vendor`` (default ``PXEClient``) *and*
  an option 93; it runs its PXE code only when some ``pxe-service`` is
  configured.
- A client a ``pxe-service`` matches (BIOS: ``x86PC``; UEFI x86_64:
  ``x86-64_EFI``, 7, and ``BC_EFI``, 9) is sent to dnsmasq's boot server:
  BIOS firmware picks the one-item menu and asks port 4011 for it, UEFI
  firmware asks port 4011 straight away (dnsmasq's "UEFI workaround"); both
  get the file there, by TFTP from this dnsmasq.
- A client no ``pxe-service`` matches gets the ``dhcp-boot`` file in the
  offer itself (discovery control 8: no menu): iPXE (tag ``ipxe``) the
  chain URL, with pxed's address as next server (siaddr: iPXE ignores a
  proxy's file without one), UEFI HTTP boot the EFI binary's URL.
- With ``HTTPClient`` among the ``dhcp-pxe-vendor`` strings, an HTTP boot
  client is a PXE client too, and the offer carries ``HTTPClient`` back in
  option 60, which UEFI HTTP boot requires of an offer: so proxy mode does
  answer UEFI HTTP boot.
- ``dhcp-ignore=tag:!known`` makes the proxy ignore (``proxy-ignored`` in
  its log) every MAC without a ``dhcp-host`` line, at port 67 and 4011."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BIOS_FILE = "undionly.kpxe"
EFI_FILES = ("snponly.efi", "ipxe.efi")
# The files pxed links into the TFTP root and serves at /boot/<file>.
FILES = (BIOS_FILE, *EFI_FILES)
CONF, KNOWN, LEASES, TFTP = "dnsmasq.conf", "known-macs", "leases", "tftp"
# The path of the EFI binary under pxed's URL (UEFI HTTP boot).
HTTP_PATH = "/boot/"
CHAIN_PATH = "/ipxe"


@dataclass(frozen=True)
class BootNet:
    """What the configuration is made of."""

    interface: str
    address: ipaddress.IPv4Interface
    url: str  # pxed's base URL, without a trailing slash
    directory: Path  # <data_dir>/bootnet
    efi: str
    enlist: bool
    networks: tuple[ipaddress.IPv4Network, ...]
    extra: tuple[str, ...] = ()
    user: str = ""
    group: str = ""

    @property
    def chain_url(self) -> str:
        return self.url + CHAIN_PATH

    @property
    def efi_url(self) -> str:
        return self.url + HTTP_PATH + self.efi


def proxy_networks(cidrs: Iterable[str]) -> tuple[ipaddress.IPv4Network, ...]:
    """The boot networks proxyDHCP can serve: IPv4, not loopback (DHCP has
    no IPv6 PXE here, and no machine netboots over loopback)."""
    nets = (ipaddress.ip_network(c) for c in cidrs)
    return tuple(n for n in nets if n.version == 4 and not n.is_loopback)


def render(b: BootNet) -> str:
    lines = [
        "# Written by pxed at every start (pxed/bootnet/); edits are lost.",
        "port=0",  # no DNS: the lab has its own
        f"interface={b.interface}",
        "bind-interfaces",
        "no-hosts",
        "no-resolv",
        f"dhcp-leasefile={b.directory / LEASES}",
    ]
    if b.user:
        lines.append(f"user={b.user}")
    if b.group:
        lines.append(f"group={b.group}")
    lines += [f"dhcp-range={n.network_address},proxy,{n.netmask}" for n in b.networks]
    lines += [
        f"dhcp-hostsfile={b.directory / KNOWN}",
        # Unknown MACs get no answer at all unless they may enlist.
        *([] if b.enlist else ["dhcp-ignore=tag:!known"]),
        "dhcp-pxe-vendor=PXEClient,HTTPClient",
        "dhcp-vendorclass=set:httpclient,HTTPClient",
        "dhcp-match=set:ipxe,175",
        "dhcp-userclass=set:ipxe,iPXE",
        # The server address puts pxed's in siaddr: iPXE takes a proxy's
        # offer or ACK as boot information only with siaddr *and* a file
        # (dhcp_has_pxeopts); without it a BIOS iPXE ROM asked port 4011
        # again and again, dropped each ACK, and never fetched the URL.
        f"dhcp-boot=tag:ipxe,{b.chain_url},,{b.address.ip}",
        f"dhcp-boot=tag:!ipxe,tag:httpclient,{b.efi_url}",
        f'pxe-service=tag:!ipxe,tag:!httpclient,x86PC,"pxed: iPXE",{BIOS_FILE}',
        f'pxe-service=tag:!ipxe,tag:!httpclient,x86-64_EFI,"pxed: iPXE",{b.efi}',
        f'pxe-service=tag:!ipxe,tag:!httpclient,BC_EFI,"pxed: iPXE",{b.efi}',
        "enable-tftp",
        f"tftp-root={b.directory / TFTP}",
        *b.extra,
    ]
    return "\n".join(lines) + "\n"


def known_macs(macs: Iterable[str]) -> str:
    """dnsmasq's ``dhcp-hostsfile``: a line per MAC, which is what makes it
    *known*."""
    return "".join(f"{mac}\n" for mac in sorted(set(macs)))
