"""What must hold before pxed runs dnsmasq, checked when the service tree
is built (a problem is one start-up line, not a dnsmasq that keeps dying):
dnsmasq is installed, the interface exists and has an IPv4 address, iPXE's
files are there, and dnsmasq itself accepts the configuration."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from twisted.logger import Logger

from pxed.bootnet import dnsmasqconf, interface
from pxed.bootnet.dnsmasqconf import BootNet
from pxed.config import Config

log = Logger()

DIRECTORY = "bootnet"


class BootNetError(Exception):
    """The boot network cannot be served; the message names the setting."""


@dataclass(frozen=True)
class Prepared:
    command: str  # dnsmasq's path
    bootnet: BootNet

    def with_port(self, port: int, config: Config) -> BootNet:
        """The configuration once pxed's port is known."""
        return replace(self.bootnet, url=pxed_url(config, self.bootnet, port))


def pxed_url(config: Config, bootnet: BootNet, port: int) -> str:
    """Where machines reach pxed: base_url, else the boot interface's
    address and pxed's port."""
    if config.base_url:
        return config.base_url.rstrip("/")
    scheme = "https" if config.port.startswith("ssl:") else "http"
    return f"{scheme}://{bootnet.address.ip}:{port}"


def _configured_port(description: str) -> int:
    parts = description.split(":")
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return 0


def prepare(config: Config) -> Prepared:
    command = shutil.which(config.boot_dhcp_command)
    if command is None:
        raise BootNetError(
            f"boot_dhcp_command: {config.boot_dhcp_command!r} not found"
            ' (boot_dhcp = "proxy" runs dnsmasq: apt-get install dnsmasq-base)'
        )
    try:
        address = interface.ipv4(config.boot_dhcp_interface)
    except interface.InterfaceError as e:
        raise BootNetError(f"boot_dhcp_interface: {e}") from None
    networks = dnsmasqconf.proxy_networks(config.boot_networks)
    if not networks:
        raise BootNetError("boot_networks: no IPv4 network for the proxyDHCP to answer on")
    if not any(address.ip in n for n in networks):
        log.warn(
            "boot_dhcp_interface {name} ({address}) is on none of boot_networks: pxed's"
            " proxyDHCP answers only relayed requests from those networks",
            name=config.boot_dhcp_interface,
            address=str(address),
        )
    for name in (dnsmasqconf.BIOS_FILE, config.boot_dhcp_efi):
        if not (config.boot_dhcp_ipxe_dir / name).is_file():
            raise BootNetError(
                f"boot_dhcp_ipxe_dir: no {name} in {config.boot_dhcp_ipxe_dir}"
                " (Debian's iPXE: apt-get install ipxe)"
            )
    directory = (config.data_dir / DIRECTORY).absolute()
    try:
        _write_directory(directory, config.boot_dhcp_ipxe_dir)
    except OSError as e:
        raise BootNetError(f"data_dir: cannot write {directory}: {e.strerror}") from None
    bootnet = BootNet(
        interface=config.boot_dhcp_interface,
        address=address,
        url="",
        directory=directory,
        efi=config.boot_dhcp_efi,
        enlist=config.enlist,
        networks=networks,
        extra=config.boot_dhcp_options,
        user=pwd.getpwuid(os.geteuid()).pw_name,
        group=grp.getgrgid(os.getegid()).gr_name,
    )
    prepared = Prepared(command, bootnet)
    # dnsmasq's own check, on the configuration it will run with (but for
    # the port, which an ephemeral listening port makes known only later).
    conf = write_conf(prepared.with_port(_configured_port(config.port), config))
    try:
        checked = subprocess.run(
            [command, "--test", f"--conf-file={conf}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BootNetError(f"boot_dhcp_command: cannot run {command}: {e}") from None
    if checked.returncode != 0:
        why = (checked.stderr or checked.stdout).strip().splitlines()
        raise BootNetError(
            f"boot_dhcp: dnsmasq refuses its configuration {conf}:"
            f" {why[-1] if why else f'exit {checked.returncode}'}"
        )
    return prepared


def _write_directory(directory: Path, ipxe_dir: Path) -> None:
    """The directory dnsmasq reads: its TFTP root holds links to Debian's
    iPXE files (and nothing else), and a known-MAC list exists."""
    tftp = directory / dnsmasqconf.TFTP
    tftp.mkdir(parents=True, exist_ok=True)
    for entry in tftp.iterdir():
        if entry.is_symlink() or entry.is_file():
            entry.unlink()
    for name in dnsmasqconf.FILES:
        source = ipxe_dir / name
        if source.is_file():
            (tftp / name).symlink_to(source.absolute())
    known = directory / dnsmasqconf.KNOWN
    if not known.exists():
        known.write_text("")


def write_conf(bootnet: BootNet) -> Path:
    path = bootnet.directory / dnsmasqconf.CONF
    write_atomically(path, dnsmasqconf.render(bootnet))
    return path


def write_atomically(path: Path, text: str) -> None:
    """*path* holds *text* whole or is unchanged: dnsmasq may read it at any
    moment (a restart, a SIGHUP)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
