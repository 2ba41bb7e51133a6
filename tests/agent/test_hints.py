"""Root device hints: the disk an image goes to, by what the disk is."""

from __future__ import annotations

import pytest

from pxed.agent.facts import Disk
from pxed.agent.hints import NoDisk, pick
from pxed.agent.wire import DiskHints, WireError

GIB = 1 << 30
DISKS = (
    Disk("/dev/sda", "sda", 500 * GIB, "ST500DM002", "Z3T1", True, "naa.5000c5006a1b2c3d"),
    Disk("/dev/sdb", "sdb", 480 * GIB, "Samsung SSD 860", "S3Z9", False, "0x5002538e40a1b2c3"),
    Disk(
        "/dev/nvme0n1",
        "nvme0n1",
        960 * GIB,
        "Samsung SSD 970",
        "S4EW",
        False,
        "eui.0025388b71b2e0a1",
        ("pci-0000:01:00.0-nvme-1",),
    ),
)


def hints(**fields) -> DiskHints:
    found = DiskHints.from_json(fields)
    assert found is not None
    return found


def test_each_hint_alone_picks_its_disk():
    # Kernel order would put the first image on sda; the hints say otherwise.
    assert pick([(0, hints(Serial="S4EW"))], DISKS)[0].path == "/dev/nvme0n1"
    assert pick([(0, hints(WWN="5002538E40A1B2C3"))], DISKS)[0].path == "/dev/sdb"
    assert pick([(0, hints(WWN="naa.5000C5006A1B2C3D"))], DISKS)[0].path == "/dev/sda"
    assert pick([(0, hints(Model="st500dm002"))], DISKS)[0].path == "/dev/sda"
    assert pick([(0, hints(Rotational=True))], DISKS)[0].path == "/dev/sda"
    assert pick([(0, hints(MinSize=900 * GIB))], DISKS)[0].path == "/dev/nvme0n1"
    assert pick([(0, hints(MaxSize=490 * GIB))], DISKS)[0].path == "/dev/sdb"
    by_path = hints(ByPath="pci-0000:01:00.0-nvme-1")
    assert pick([(0, by_path)], DISKS)[0].path == "/dev/nvme0n1"


def test_a_combination_must_all_hold():
    both = hints(Rotational=False, MinSize=400 * GIB, MaxSize=500 * GIB)
    assert pick([(0, both)], DISKS)[0].path == "/dev/sdb"
    with pytest.raises(NoDisk, match="no disk matches"):
        pick([(0, hints(Serial="S4EW", Rotational=True))], DISKS)


def test_no_match_and_two_matches_list_the_candidates():
    with pytest.raises(NoDisk) as none:
        pick([(0, hints(Serial="NOPE"))], DISKS)
    text = str(none.value)
    assert "no disk matches the root device hints Serial=NOPE" in text
    for disk in DISKS:
        assert disk.path in text and disk.serial in text and str(disk.size) in text
    with pytest.raises(NoDisk) as two:
        pick([(0, hints(Rotational=False))], DISKS)
    text = str(two.value)
    assert "2 disks match" in text and "/dev/sdb" in text and "/dev/nvme0n1" in text
    assert "/dev/sda " not in text


def test_entries_without_hints_keep_kernel_order_and_no_disk_is_taken_twice():
    chosen = pick([(None, hints(Serial="S4EW")), (1, None)], DISKS)
    assert [d.path for d in chosen] == ["/dev/nvme0n1", "/dev/sdb"]
    with pytest.raises(NoDisk, match="two images would go to /dev/sda"):
        pick([(0, None), (1, hints(Rotational=True))], DISKS)


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"Serial": ""}, "Serial"),
        ({"Serial": 12}, "Serial"),
        ({"MinSize": -1}, "MinSize"),
        ({"MaxSize": "1TiB"}, "MaxSize"),
        ({"MinSize": True}, "MinSize"),
        ({"Rotational": "yes"}, "Rotational"),
        ({"Colour": "red"}, "Colour"),
        ({"MinSize": 10, "MaxSize": 5}, "MinSize is larger"),
    ],
)
def test_bad_hints_name_the_field(given, field):
    with pytest.raises(WireError, match=field):
        DiskHints.from_json(given)


def test_empty_hints_are_none_and_round_trip():
    assert DiskHints.from_json(None) is None and DiskHints.from_json({}) is None
    given = {"Serial": "S4EW", "MinSize": GIB, "Rotational": False}
    assert hints(**given).to_json() == given
