"""The agent's settings: from the kernel command line (the management OS:
``pxed.url= pxed.mac= pxed.token= pxed.mode=enlist pxed.after= pxed.debug=1``)
or from command-line flags (a host), the flags winning."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CMDLINE = Path("/proc/cmdline")
# What the machine does once the agent is done: the management OS reboots
# (into the disk just written) or powers off; on a host the agent exits.
AFTER = ("reboot", "poweroff", "halt", "exit")
MODES = ("deploy", "enlist")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


class ConfigError(Exception):
    """The settings are incomplete or wrong; the message says which."""


@dataclass(frozen=True)
class Settings:
    url: str
    mac: str
    token: str = field(repr=False)
    mode: str = "deploy"
    after: str = "reboot"
    debug: bool = False
    # Machine facts (DMI, NICs, CPU, disks...) from a JSON file instead of
    # /sys, /proc and dmidecode; disks given by path, in mapping order.
    facts: Path | None = None
    disks: tuple[Path, ...] = ()
    # Where the machine image is downloaded to (RAM in the management OS).
    workdir: Path | None = None
    # Connecting to pxed while the network comes up: tries and the wait
    # between them (about a minute in all).
    connect_tries: int = 12
    retry_delay: float = 5.0
    # How long to wait for disk drivers that probe asynchronously.
    disk_wait: float = 30.0


def parse_cmdline(text: str) -> dict[str, str]:
    """The ``pxed.*`` words of a kernel command line, without the prefix."""
    found: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep and key.startswith("pxed."):
            found[key.removeprefix("pxed.")] = value
    return found


def normalise_mac(text: str) -> str:
    mac = text.strip().lower().replace("-", ":")
    if not _MAC.fullmatch(mac):
        raise ConfigError(f"not a MAC address: {text!r} (expected e.g. 52:54:00:12:34:56)")
    return mac


def check_url(text: str) -> str:
    url = text.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"not an http(s) URL: {text!r}")
    return url


def arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pxed.agent",
        description="pxed's management OS agent. Without flags it reads pxed.url, pxed.mac "
        "and pxed.token (and pxed.mode, pxed.after, pxed.debug) from the kernel command line.",
    )
    p.add_argument("--url", help="pxed's base URL (pxed.url=)")
    p.add_argument("--mac", help="this machine's MAC address (pxed.mac=)")
    p.add_argument(
        "--token", help="the machine credential (pxed.token=; or $PXED_TOKEN, kept off argv)"
    )
    p.add_argument("--mode", choices=MODES, help="enlist: only send the inventory (pxed.mode=)")
    p.add_argument("--after", choices=AFTER, help="what to do at the end (pxed.after=)")
    p.add_argument("--debug", action="store_true", default=None, help="log debug lines too")
    p.add_argument("--facts", type=Path, help="machine facts from this JSON file")
    p.add_argument(
        "--disk",
        type=Path,
        action="append",
        default=[],
        help="a file or block device standing for a disk (repeat, in order)",
    )
    p.add_argument("--workdir", type=Path, help="for the machine image (default: a temp dir)")
    p.add_argument("--cmdline", type=Path, default=CMDLINE, help=argparse.SUPPRESS)
    p.add_argument("--connect-tries", type=int, default=12, help="tries to reach pxed")
    p.add_argument("--retry-delay", type=float, default=5.0, help="seconds between those tries")
    p.add_argument("--disk-wait", type=float, default=30.0, help="seconds to wait for disks")
    return p


def settings(argv: list[str], environ: dict[str, str] | None = None) -> Settings:
    """The settings *argv* (and the kernel command line beneath them) give."""
    environ = os.environ if environ is None else environ
    args = arguments().parse_args(argv)
    # The kernel command line is the management OS's only source; on a host
    # with --url it is not read at all (it is the host's).
    kernel: dict[str, str] = {}
    if args.url is None:
        try:
            kernel = parse_cmdline(args.cmdline.read_text(errors="replace"))
        except OSError as e:
            raise ConfigError(f"cannot read {args.cmdline}: {e.strerror}") from None
    url = args.url or kernel.get("url", "")
    mac = args.mac or kernel.get("mac", "")
    token = args.token or environ.get("PXED_TOKEN", "") or kernel.get("token", "")
    if not (url and mac and token):
        missing = [n for n, v in (("url", url), ("mac", mac), ("token", token)) if not v]
        if args.url:
            raise ConfigError(
                "--url, --mac and --token (or $PXED_TOKEN) are all needed "
                f"(missing: {', '.join('--' + n for n in missing)})"
            )
        raise ConfigError(
            "pxed.url, pxed.mac and pxed.token must all be on the kernel command line "
            f"(missing: {', '.join('pxed.' + n for n in missing)})"
        )
    mode = args.mode or kernel.get("mode", "deploy")
    if mode not in MODES:
        raise ConfigError(f"pxed.mode={mode}: one of {', '.join(MODES)}")
    after = args.after or kernel.get("after", "reboot")
    if after not in AFTER[:3] and args.after is None:
        after = "reboot"  # as the management OS always did: never stay up by mistake
    if args.connect_tries < 1 or args.retry_delay < 0 or args.disk_wait < 0:
        raise ConfigError("--connect-tries must be at least 1, the delays not negative")
    return Settings(
        url=check_url(url),
        mac=normalise_mac(mac),
        token=token.strip(),
        mode=mode,
        after=after,
        debug=bool(args.debug) if args.debug is not None else kernel.get("debug") == "1",
        facts=args.facts,
        disks=tuple(args.disk),
        workdir=args.workdir,
        connect_tries=args.connect_tries,
        retry_delay=args.retry_delay,
        disk_wait=args.disk_wait,
    )
