"""What the agent knows of the machine: its disks (in the mapping order),
NICs, DMI strings, CPU, memory, firmware and architecture.  Read from
/sys, /proc and dmidecode in the management OS; on a host, or in tests,
from a JSON file (``--facts``, the inventory's shape plus each disk's
``Path``) and ``--disk`` paths, so a test machine can be anything."""

from __future__ import annotations

import json
import os
import platform
import re
import stat
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pxed.agent.wire import InventoryNIC

SYS_BLOCK = Path("/sys/block")
SYS_NET = Path("/sys/class/net")
SYS_DMI = Path("/sys/class/dmi/id")
DEV_BY_PATH = Path("/dev/disk/by-path")
_PCI_ADDRESS = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]")
# Whole disks the images go to (see disks.py for the rule).
_DISK_NAME = re.compile(r"(vd|sd|xvd|hd)[a-z]+|nvme[0-9]+n[0-9]+")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._:-]")


class FactsError(Exception):
    pass


@dataclass(frozen=True)
class Disk:
    path: str
    name: str
    size: int
    model: str = ""
    serial: str = ""
    rotational: bool | None = None
    wwn: str = ""
    # Its /dev/disk/by-path names (root device hints match one of them).
    by_path: tuple[str, ...] = ()


# A NIC is known by what the inventory says of it, nothing more.
NIC = InventoryNIC


@dataclass(frozen=True)
class Facts:
    arch: str
    kernel: str
    cpu_model: str
    cpu_count: int
    memory: int
    firmware: str
    dmi_vendor: str
    dmi_product: str
    dmi_serial: str
    nics: tuple[NIC, ...]
    # None: find them in /sys/block (and wait for slow drivers).
    disks: tuple[Disk, ...] | None


def _line(path: Path) -> str:
    """A sysfs file's first line, without control characters."""
    try:
        with open(path, "rb") as f:
            raw = f.readline(4096)
    except OSError:
        return ""
    text = raw.decode("utf-8", "replace")
    return "".join(c for c in text if c >= " ").strip()[:255]


def _dmidecode(keyword: str) -> str:
    try:
        done = subprocess.run(
            ["dmidecode", "-s", keyword], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in done.stdout.splitlines():
        if line and not line.startswith("#"):
            return "".join(c for c in line if c >= " ").strip()[:255]
    return ""


def _dmi(keyword: str, sysfs: str) -> str:
    return _dmidecode(keyword) or _line(SYS_DMI / sysfs)


def _cpu() -> tuple[str, int]:
    model, count = "", 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "processor":
                    count += 1
                elif key in ("model name", "Processor", "cpu model") and not model:
                    model = value.strip()
    except OSError:
        pass
    return model[:255] or _dmidecode("processor-version"), max(count, 1)


def _memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def memory_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def size_of(path: str) -> int:
    """A disk's size in bytes: a block device's, a file's, else 0."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return 0
    try:
        if stat.S_ISBLK(os.fstat(fd).st_mode) or stat.S_ISREG(os.fstat(fd).st_mode):
            return os.lseek(fd, 0, os.SEEK_END)
        return 0
    finally:
        os.close(fd)


def system_disks() -> tuple[Disk, ...]:
    """The whole disks of /sys/block in kernel name order."""
    found = []
    try:
        names = os.listdir(SYS_BLOCK)
    except OSError:
        names = []
    for name in names:
        if not _DISK_NAME.fullmatch(name):
            continue  # loop, ram, sr, zram, md, dm, nvme multipath paths (nvme0c0n1)
        sys = SYS_BLOCK / name
        if _line(sys / "hidden") == "1":
            continue
        try:
            sectors = int(_line(sys / "size") or 0)
        except ValueError:
            sectors = 0
        if sectors <= 0:
            continue  # a card reader without a card
        rotational = {"1": True, "0": False}.get(_line(sys / "queue" / "rotational"))
        found.append(
            Disk(
                path=f"/dev/{name}",
                name=name,
                size=size_of(f"/dev/{name}") or sectors * 512,
                model=_line(sys / "device" / "model"),
                serial=_line(sys / "serial") or _line(sys / "device" / "serial"),
                rotational=rotational,
                wwn=_line(sys / "wwid") or _line(sys / "device" / "wwid"),
                by_path=by_path(name),
            )
        )
    return tuple(sorted(found, key=lambda d: (len(d.name), d.name)))


def by_path(name: str) -> tuple[str, ...]:
    """The disk's by-path names: udev's links where udev runs; else (the
    management OS runs no udev) the name udev gives a virtio or NVMe disk,
    made from the PCI address sysfs shows: ``pci-0000:00:04.0``,
    ``pci-0000:01:00.0-nvme-1``."""
    try:
        links = [
            link
            for link in sorted(os.listdir(DEV_BY_PATH))
            if os.path.realpath(DEV_BY_PATH / link) == f"/dev/{name}"
        ]
    except OSError:
        links = []
    if links:
        return tuple(links)
    device = os.path.realpath(SYS_BLOCK / name / "device")
    addresses = [part for part in device.split("/") if _PCI_ADDRESS.fullmatch(part)]
    if not addresses:
        return ()
    path = f"pci-{addresses[-1]}"
    if name.startswith("nvme"):
        nsid = _line(SYS_BLOCK / name / "nsid")
        return (f"{path}-nvme-{nsid}",) if nsid else ()
    return (path,) if name.startswith("vd") else ()


def system_nics() -> tuple[NIC, ...]:
    nics = []
    try:
        names = sorted(os.listdir(SYS_NET))
    except OSError:
        names = []
    for name in names:
        dev = SYS_NET / name
        if _line(dev / "type") != "1" or not (dev / "device").exists():
            continue  # not ethernet, or not hardware (a bridge, a tunnel)
        try:
            driver = os.path.basename(os.readlink(dev / "device" / "driver"))
        except OSError:
            driver = ""
        speed_text = _line(dev / "speed")
        speed = int(speed_text) if re.fullmatch(r"-?[0-9]+", speed_text) else None
        nics.append(
            NIC(
                mac=_line(dev / "address"),
                driver=driver[:64],
                link=_line(dev / "carrier") == "1",
                speed=speed if speed is None or speed >= 0 else None,
            )
        )
    return tuple(nics)


def system() -> Facts:
    """This machine's facts, disks left to be found (see disks.py)."""
    cpu_model, cpu_count = _cpu()
    return Facts(
        arch=platform.machine(),
        kernel=platform.release(),
        cpu_model=cpu_model,
        cpu_count=cpu_count,
        memory=_memory(),
        firmware="uefi" if Path("/sys/firmware/efi").is_dir() else "bios",
        dmi_vendor=_dmi("system-manufacturer", "sys_vendor"),
        dmi_product=_dmi("system-product-name", "product_name"),
        dmi_serial=_dmi("system-serial-number", "product_serial"),
        nics=system_nics(),
        disks=None,
    )


def disk_name(path: str) -> str:
    """An inventory name for a disk given by path (a file in tests)."""
    name = _NAME_CHARS.sub("_", os.path.basename(path.rstrip("/")) or "disk")
    return name.lstrip("._:-")[:32] or "disk"


def _get(data: dict[str, Any], name: str, default: Any = None) -> Any:
    for key, value in data.items():
        if key.lower() == name.lower():
            return value
    return default


def _disk_from(data: Any, i: int) -> Disk:
    if not isinstance(data, dict) or not isinstance(_get(data, "Path"), str):
        raise FactsError(f"Disks[{i}]: an object with a Path (the file or device)")
    path = _get(data, "Path")
    size = _get(data, "Size")
    rotational = _get(data, "Rotational")
    return Disk(
        path=path,
        name=str(_get(data, "Name") or disk_name(path)),
        size=int(size) if size is not None else size_of(path),
        model=str(_get(data, "Model") or ""),
        serial=str(_get(data, "Serial") or ""),
        rotational=None if rotational is None else bool(rotational),
        wwn=str(_get(data, "WWN") or ""),
        by_path=tuple(str(p) for p in _get(data, "ByPath") or ()),
    )


def load(path: Path | None, disk_paths: tuple[Path, ...], base: Facts | None = None) -> Facts:
    """Facts from the *path* JSON file (what it gives wins over *base*,
    this machine's by default), with the disks *disk_paths* if any."""
    facts = base if base is not None else system()
    if path is not None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise FactsError(f"cannot read the facts file {path}: {e}") from None
        if not isinstance(data, dict):
            raise FactsError(f"{path}: expected a JSON object")
        cpu = _get(data, "CPU") or {}
        dmi = _get(data, "DMI") or {}
        nics = _get(data, "NICs")
        disks = _get(data, "Disks")
        try:
            facts = replace(
                facts,
                arch=str(_get(data, "Arch") or facts.arch),
                kernel=str(_get(data, "Kernel") or facts.kernel),
                cpu_model=str(_get(cpu, "Model") or facts.cpu_model),
                cpu_count=int(_get(cpu, "Count") or facts.cpu_count),
                memory=int(_get(data, "Memory") or facts.memory),
                firmware=str(_get(data, "Firmware") or facts.firmware),
                dmi_vendor=str(_get(dmi, "Vendor") or facts.dmi_vendor),
                dmi_product=str(_get(dmi, "Product") or facts.dmi_product),
                dmi_serial=str(_get(dmi, "Serial") or facts.dmi_serial),
                nics=facts.nics
                if nics is None
                else tuple(
                    NIC(
                        mac=str(_get(n, "MAC") or ""),
                        driver=str(_get(n, "Driver") or ""),
                        link=bool(_get(n, "Link")),
                        speed=_get(n, "Speed"),
                    )
                    for n in nics
                ),
                disks=facts.disks
                if disks is None
                else tuple(_disk_from(d, i) for i, d in enumerate(disks)),
            )
        except (TypeError, ValueError, AttributeError) as e:
            raise FactsError(f"{path}: {e}") from None
    if disk_paths:
        facts = replace(
            facts,
            disks=tuple(
                Disk(path=str(p), name=disk_name(str(p)), size=size_of(str(p))) for p in disk_paths
            ),
        )
    return facts
