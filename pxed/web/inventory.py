"""A machine's hardware inventory as the management OS reports it
(``PUT /machine/{mac}/hardware``): checked field by field, bounded, and
turned into the one shape pxed stores and answers.

    {"Arch": "x86_64", "CPU": {"Model": "…", "Count": 4}, "Memory": 8589934592,
     "Firmware": "uefi", "DMI": {"Vendor": "…", "Product": "…", "Serial": "…"},
     "Disks": [{"Name": "vda", "Size": 1073741824, "Model": "…", "Serial": "…",
                "Rotational": false, "WWN": "…", "ByPath": ["pci-0000:00:04.0"]}],
     "NICs": [{"MAC": "52:54:00:12:34:56", "Driver": "virtio_net", "Link": true,
               "Speed": 1000}]}

Field names match case-insensitively, as everywhere in the API; fields
pxed does not know are ignored (as Go's decoder would)."""

from __future__ import annotations

import re
from typing import Any

from pxed import macaddr
from pxed.db.hardware import Inventory
from pxed.errors import BadRequest
from pxed.web.body import INT_MAX, Fields

# Limits: a machine with more is not one pxed provisions.
MAX_DISKS = 256
MAX_NICS = 64
MAX_TEXT = 255
MAX_BY_PATH = 8
MAX_CPUS = 1 << 20
FIRMWARE = ("uefi", "bios")
# What uname -m and Debian call the architectures pxed knows by other names.
_ALIASES = {"amd64": "x86_64", "aarch64": "arm64"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,31}")
_ARCH = re.compile(r"[a-z0-9_]{1,16}")


def _text(fields: Fields, name: str, where: str, limit: int = MAX_TEXT) -> str:
    try:
        value = fields.str(name, max_length=limit)
    except BadRequest as e:
        raise BadRequest(f"{where}{e.message}") from None
    return (value or "").strip()


def _int(fields: Fields, name: str, where: str, minimum: int, maximum: int = INT_MAX) -> int:
    try:
        value = fields.int(name, required=True)
    except BadRequest as e:
        raise BadRequest(f"{where}{e.message}") from None
    assert value is not None
    if not minimum <= value <= maximum:
        raise BadRequest(f"{where}{name}: must be from {minimum} to {maximum}")
    return value


def _objects(body: Fields, name: str, limit: int) -> list[Fields]:
    items = body.list(name) or []
    if len(items) > limit:
        raise BadRequest(f"{name}: more than {limit} entries")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"{name}[{i}]: must be an object")
    return [Fields(item) for item in items]


def _disk(disk: Fields, where: str) -> dict[str, Any]:
    name = _text(disk, "Name", where, 32)
    if not _NAME.fullmatch(name):
        raise BadRequest(f"{where}Name: a kernel device name such as sda or nvme0n1")
    rotational = disk.bool("Rotational") if disk.raw("Rotational") is not None else None
    return {
        "Name": name,
        "Size": _int(disk, "Size", where, 0),
        "Model": _text(disk, "Model", where),
        "Serial": _text(disk, "Serial", where),
        "Rotational": rotational,
        "WWN": _text(disk, "WWN", where),
        "ByPath": _by_path(disk, where),
    }


def _by_path(disk: Fields, where: str) -> list[str]:
    links = disk.list("ByPath") or []
    if len(links) > MAX_BY_PATH or not all(
        isinstance(link, str) and 0 < len(link) <= MAX_TEXT for link in links
    ):
        raise BadRequest(f"{where}ByPath: at most {MAX_BY_PATH} names of 1-{MAX_TEXT} characters")
    return links


def _nic(nic: Fields, where: str) -> dict[str, Any]:
    try:
        mac = macaddr.normalise(nic.raw("MAC"))
    except BadRequest as e:
        raise BadRequest(f"{where}MAC: {e.message}") from None
    speed = None
    if nic.raw("Speed") is not None:
        # The kernel says -1 when the link is down or the speed unknown.
        speed = _int(nic, "Speed", where, -1, 10_000_000)
        speed = None if speed < 0 else speed
    return {
        "MAC": mac,
        "Driver": _text(nic, "Driver", where, 64),
        "Link": bool(nic.bool("Link")),
        "Speed": speed,
    }


def parse(body: Fields) -> Inventory:
    """The inventory in *body*, or a 400 naming the first wrong field."""
    arch = (body.str("Arch", required=True, max_length=16) or "").lower()
    arch = _ALIASES.get(arch, arch)
    if not _ARCH.fullmatch(arch):
        raise BadRequest("Arch: a machine architecture such as x86_64 or arm64")
    cpu = body.object("CPU", required=True)
    assert cpu is not None
    firmware = (body.str("Firmware", required=True, max_length=8) or "").lower()
    if firmware not in FIRMWARE:
        raise BadRequest("Firmware: one of uefi, bios")
    dmi = body.object("DMI") or Fields({})
    disks = [_disk(d, f"Disks[{i}].") for i, d in enumerate(_objects(body, "Disks", MAX_DISKS))]
    nics = [_nic(n, f"NICs[{i}].") for i, n in enumerate(_objects(body, "NICs", MAX_NICS))]
    data = {
        "Arch": arch,
        "CPU": {
            "Model": _text(cpu, "Model", "CPU."),
            "Count": _int(cpu, "Count", "CPU.", 1, MAX_CPUS),
        },
        "Memory": _int(body, "Memory", "", 0),
        "Firmware": firmware,
        "DMI": {k: _text(dmi, k, "DMI.") for k in ("Vendor", "Product", "Serial")},
        "Disks": disks,
        "NICs": nics,
    }
    return Inventory(
        arch=arch,
        cpu_count=data["CPU"]["Count"],
        memory=data["Memory"],
        largest_disk=max((d["Size"] for d in disks), default=0),
        data=data,
    )


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def size(name: str, text: str) -> int:
    """A size in a query: bytes, or with a binary suffix (``8G`` is 8 GiB)."""
    m = re.fullmatch(r"([0-9]{1,19})\s*([kmgtp]?)(?:i?b)?", text.strip().lower())
    if m is None:
        raise BadRequest(f"{name}: a size in bytes, or with K, M, G, T or P (e.g. 8G)")
    value = int(m.group(1)) * _UNITS[m.group(2)]
    if value > INT_MAX:
        raise BadRequest(f"{name}: too large")
    return value
