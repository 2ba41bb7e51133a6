"""The boot network's configuration for a lab that keeps its own DHCP
server instead of pxed's proxy (``pxed-admin boot-network-config``): the
same branches (BIOS PXE, UEFI PXE, iPXE, UEFI HTTP boot), as lines to add
to the lab's dnsmasq.conf or dhcpd.conf, pointing at pxed's URL."""

from __future__ import annotations

from pxed.bootnet.dnsmasqconf import BIOS_FILE, CHAIN_PATH, HTTP_PATH


def dnsmasq(url: str, efi: str, tftp_root: str) -> str:
    """For a dnsmasq that hands out the addresses (a ``dhcp-range``) and
    serves iPXE's files by TFTP itself from *tftp_root*."""
    return f"""\
# pxed: netboot into {url}.  Add to the lab's dnsmasq.conf, beside its
# dhcp-range; this dnsmasq serves Debian's iPXE (apt-get install ipxe) by TFTP.
dhcp-match=set:ipxe,175
dhcp-userclass=set:ipxe,iPXE
dhcp-vendorclass=set:httpclient,HTTPClient
dhcp-match=set:bios,option:client-arch,0
dhcp-match=set:efi64,option:client-arch,7
dhcp-match=set:efi64,option:client-arch,9
# iPXE (BIOS or UEFI): pxed's boot script, which asks for this MAC's answer.
dhcp-boot=tag:ipxe,{url}{CHAIN_PATH}
# UEFI HTTP boot: the EFI binary from pxed; the offer must say HTTPClient.
dhcp-boot=tag:!ipxe,tag:httpclient,{url}{HTTP_PATH}{efi}
dhcp-option-force=tag:httpclient,option:vendor-class,HTTPClient
# BIOS and UEFI PXE ROMs: iPXE by TFTP first.
dhcp-boot=tag:!ipxe,tag:!httpclient,tag:bios,{BIOS_FILE}
dhcp-boot=tag:!ipxe,tag:!httpclient,tag:efi64,{efi}
enable-tftp
tftp-root={tftp_root}
"""


def isc_dhcp(url: str, efi: str, tftp_server: str) -> str:
    """For ISC dhcpd; *tftp_server* serves undionly.kpxe and the EFI file
    (e.g. tftpd-hpa with Debian's /usr/lib/ipxe as its root)."""
    return f"""\
# pxed: netboot into {url}.  Add to dhcpd.conf (the option definition at
# the top level, the rest in the subnet or group of the machines).
option client-arch code 93 = unsigned integer 16;

if exists user-class and option user-class = "iPXE" {{
    # iPXE (BIOS or UEFI): pxed's boot script, which asks for this MAC's answer.
    filename "{url}{CHAIN_PATH}";
}} elsif substring (option vendor-class-identifier, 0, 10) = "HTTPClient" {{
    # UEFI HTTP boot: the EFI binary from pxed; the offer must say HTTPClient.
    option vendor-class-identifier "HTTPClient";
    filename "{url}{HTTP_PATH}{efi}";
}} elsif option client-arch = 00:00 {{
    # BIOS PXE: iPXE by TFTP first.
    next-server {tftp_server};
    filename "{BIOS_FILE}";
}} elsif option client-arch = 00:07 or option client-arch = 00:09 {{
    # UEFI x86_64 PXE: iPXE by TFTP first.
    next-server {tftp_server};
    filename "{efi}";
}}
"""
