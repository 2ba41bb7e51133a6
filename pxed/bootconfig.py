"""The netboot answer: whether a machine gets the management OS, and how
that is said to pixiecore (JSON) and to iPXE (a script)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pxed.config import BootFiles
from pxed.db.machines import Machine


@dataclass(frozen=True)
class Decision:
    serve: bool
    reason: str


def decide(machine: Machine | None, policy: str, has_work: bool) -> Decision:
    """Serve the management OS to a managed machine that has work, or to
    every managed machine under the ``always`` policy; otherwise let the
    firmware boot from its local disk."""
    if machine is None:
        return Decision(False, "unknown MAC address")
    if not machine.managed:
        return Decision(False, "machine is not managed")
    if has_work:
        return Decision(True, "machine has queued work")
    if policy == "always":
        return Decision(True, "boot policy is always")
    return Decision(False, "no queued work (boot policy on-demand)")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """The ``boot_networks`` setting, parsed (config checked each entry)."""
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


def on_boot_network(address: str | None, allowed: Iterable[Network]) -> bool:
    if address is None:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in allowed)


@dataclass(frozen=True)
class BootParams:
    kernel: str
    initrd: tuple[str, ...]
    cmdline: str


def file_url(base_url: str, path: str) -> str:
    if path.startswith(("http://", "https://")):
        return path
    return f"{base_url}/static/{quote(path.lstrip('/'))}"


def params(
    files: BootFiles, base_url: str, mac: str, token: str | None, mode: str | None = None
) -> BootParams:
    """*mode*: ``enlist`` for an unknown machine booted to register itself."""
    args = [files.cmdline] if files.cmdline else []
    args += [f"pxed.url={base_url}", f"pxed.mac={mac}"]
    if token:
        args.append(f"pxed.token={token}")
    if mode:
        args.append(f"pxed.mode={mode}")
    return BootParams(
        kernel=file_url(base_url, files.kernel),
        initrd=tuple(file_url(base_url, p) for p in files.initrd),
        cmdline=" ".join(args),
    )


def pixiecore(p: BootParams, message: str) -> dict[str, object]:
    """pixiecore's API-mode answer to GET /v1/boot/<mac>."""
    return {"kernel": p.kernel, "initrd": list(p.initrd), "cmdline": p.cmdline, "message": message}


def _ipxe_quote(text: str) -> str:
    # iPXE expands ${...} in script lines; nothing of ours should be expanded.
    return text.replace("$", "")


def ipxe_boot(p: BootParams, message: str) -> str:
    names = [f"initrd{i}" for i in range(len(p.initrd))]
    # initrd=<name> lets the EFI stub find each initrd; BIOS kernels ignore it.
    args = " ".join([f"initrd={n}" for n in names] + [p.cmdline])
    lines = ["#!ipxe", f"echo pxed: {_ipxe_quote(message)}", f"kernel {p.kernel} {args}"]
    lines += [f"initrd --name {n} {url}" for n, url in zip(names, p.initrd, strict=True)]
    lines.append("boot")
    return "\n".join(lines) + "\n"


def ipxe_exit(reason: str) -> str:
    """Leave iPXE so the firmware goes on to the next boot device (the disk)."""
    return f"#!ipxe\necho pxed: {_ipxe_quote(reason)}; booting from local disk\nexit\n"


def ipxe_chain(base_url: str) -> str:
    return f"#!ipxe\nchain --autofree {base_url}/ipxe/${{net0/mac}}\n"
