"""Root device hints: which disk an image goes to, said by what the disk is
rather than by where the kernel happened to list it.

Kernel names are handed out in probe order, which changes between boots
and between kernels; a second disk holding a clone of the first can take
its name.  A setup entry may therefore name its disk by any combination of
serial, WWN, model, size range, rotational and by-path; every hint given
must hold (AND), and exactly one of the machine's disks must match, else
the work fails with the candidates listed and nothing is written.

Their wire type, pxed.agent.wire.DiskHints, also validates them on the
server (pxed.web.setups), so the two cannot disagree on a field."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pxed.agent.facts import Disk
from pxed.agent.wire import DiskHints


def _wwn(value: str) -> str:
    """WWNs as sysfs (``naa.5000c500…``, ``0x5000c500…``) and tools
    (``5000C500…``) write them compare equal."""
    value = value.strip().lower()
    for prefix in ("naa.", "eui.", "t10.", "0x"):
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


def matches(hints: DiskHints, disk: Disk) -> bool:
    if hints.serial is not None and disk.serial.strip() != hints.serial:
        return False
    if hints.wwn is not None and (not disk.wwn or _wwn(disk.wwn) != _wwn(hints.wwn)):
        return False
    if hints.model is not None and disk.model.strip().lower() != hints.model.lower():
        return False
    if hints.min_size is not None and disk.size < hints.min_size:
        return False
    if hints.max_size is not None and disk.size > hints.max_size:
        return False
    if hints.rotational is not None and disk.rotational is not hints.rotational:
        return False
    return hints.by_path is None or hints.by_path in disk.by_path


def candidates(disks: Iterable[Disk]) -> str:
    return (
        "; ".join(
            f"{d.path} (serial {d.serial or '-'}, wwn {d.wwn or '-'}, model {d.model or '-'}, "
            f"{d.size} bytes, {'rotational' if d.rotational else 'solid state'}"
            f"{', by-path ' + d.by_path[0] if d.by_path else ''})"
            for d in disks
        )
        or "none"
    )


class NoDisk(Exception):
    """The hints match no disk, or more than one."""


def pick(
    wanted: Sequence[tuple[int | None, DiskHints | None]], disks: Sequence[Disk]
) -> list[Disk]:
    """The disk of each entry (its kernel-order index, its hints): by hints
    where given, by index otherwise.  Everything is decided before anything
    is written: no match, two matches, or one disk chosen twice is NoDisk."""
    chosen: list[Disk] = []
    for index, hints in wanted:
        if hints is None:
            chosen.append(disks[index or 0])
            continue
        found = [d for d in disks if matches(hints, d)]
        if len(found) != 1:
            what = "no disk matches" if not found else f"{len(found)} disks match"
            raise NoDisk(
                f"{what} the root device hints {hints.describe()}; "
                f"candidates: {candidates(found or disks)}"
            )
        chosen.append(found[0])
    paths = [d.path for d in chosen]
    twice = next((p for p in paths if paths.count(p) > 1), None)
    if twice is not None:
        raise NoDisk(f"two images would go to {twice}; candidates: {candidates(disks)}")
    return chosen
