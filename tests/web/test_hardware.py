"""Hardware inventory: the management OS registers what it found
(PUT /machine/{mac}/hardware), it is stored with the time it was seen,
read back, bounded and checked, and GET /machines filters by it."""

from __future__ import annotations

import copy

import pytest_twisted

from tests.helpers import MAC, OTHER_MAC, add_machine, machine_client, machine_events, new_image
from tests.helpers import enqueue as enqueue_work

GIB = 1 << 30

INVENTORY = {
    "Arch": "x86_64",
    "CPU": {"Model": "QEMU Virtual CPU version 2.5+", "Count": 4},
    "Memory": 8 * GIB,
    "Firmware": "UEFI",
    "DMI": {"Vendor": "QEMU", "Product": "Standard PC (i440FX + PIIX, 1996)", "Serial": ""},
    "Disks": [
        {
            "Name": "vda",
            "Size": 100 * GIB,
            "Model": "",
            "Serial": "d1",
            "Rotational": True,
            "WWN": "",
            "ByPath": ["pci-0000:00:04.0"],
        },
        {
            "Name": "nvme0n1",
            "Size": 500 * GIB,
            "Model": "Fast",
            "Serial": "n1",
            "Rotational": False,
            "WWN": "eui.0025388b71b2e0a1",
            "ByPath": ["pci-0000:01:00.0-nvme-1"],
        },
    ],
    "NICs": [{"MAC": MAC.upper(), "Driver": "virtio_net", "Link": True, "Speed": -1}],
}


def inventory(**changes) -> dict:
    found = copy.deepcopy(INVENTORY)
    found.update(changes)
    return found


async def credential(server, mac: str = MAC):
    """The management OS of *mac*: a machine with work queued, and the
    credential its netboot answer carries."""
    alice = await server.user(f"u{mac[-2:]}")
    disk = await new_image(alice)
    await enqueue_work(alice, [{"UUID": disk}], mac=mac, user=f"u{mac[-2:]}")
    return await machine_client(server, mac)


@pytest_twisted.ensureDeferred
async def test_the_management_os_registers_and_anyone_signed_in_reads_it(server):
    await add_machine(server)
    assert (await server.admin.get(f"/machine/{MAC}/hardware")).code == 404
    mgmtos = await credential(server)
    r = await mgmtos.put(f"/machine/{MAC}/hardware", INVENTORY)
    assert r.code == 200, r.text
    stored = r.json()
    assert stored["Source"] == "deploy" and stored["SeenAt"].endswith("Z")
    # Stored as checked: canonical values, unknown speed as null.
    assert stored["Firmware"] == "uefi"
    assert stored["NICs"] == [{"MAC": MAC, "Driver": "virtio_net", "Link": True, "Speed": None}]
    assert stored["Disks"] == INVENTORY["Disks"]
    assert stored["CPU"] == INVENTORY["CPU"] and stored["Memory"] == 8 * GIB
    bob = await server.user("bob")
    r = await bob.get(f"/machine/{MAC}/hardware")
    assert r.code == 200 and r.json() == stored
    # Recorded once; a boot that finds the same hardware adds no event.
    await mgmtos.put(f"/machine/{MAC}/hardware", INVENTORY)
    changed = inventory(Memory=16 * GIB)
    await mgmtos.put(f"/machine/{MAC}/hardware", changed)
    actions = [e["Action"] for e in await machine_events(server.admin)]
    assert [a for a in actions if a.startswith("hardware.")] == ["hardware.new", "hardware.changed"]
    assert (await bob.get(f"/machine/{MAC}/hardware")).json()["Memory"] == 16 * GIB


@pytest_twisted.ensureDeferred
async def test_bad_or_oversized_inventories_are_refused_and_change_nothing(server):
    await add_machine(server)
    mgmtos = await credential(server)
    disk = INVENTORY["Disks"][0]
    nic = INVENTORY["NICs"][0]
    cases = {
        "Arch": {k: v for k, v in INVENTORY.items() if k != "Arch"},
        "Memory": inventory(Memory=-1),
        "CPU.Count": inventory(CPU={"Model": "x", "Count": 0}),
        "Firmware": inventory(Firmware="coreboot"),
        "Disks: more than 256": inventory(Disks=[disk] * 257),
        "NICs: more than 64": inventory(NICs=[nic] * 65),
        "Disks[0].Name": inventory(Disks=[{**disk, "Name": "../etc"}]),
        "Disks[0].Size": inventory(Disks=[{**disk, "Size": "big"}]),
        "Disks[0].Model": inventory(Disks=[{**disk, "Model": "x" * 256}]),
        "Disks[1]": inventory(Disks=[disk, "vdb"]),
        "NICs[0].MAC": inventory(NICs=[{**nic, "MAC": "nope"}]),
        "DMI.Serial": inventory(DMI={"Serial": 7}),
        "CPU": inventory(CPU=None),
    }
    for expected, body in cases.items():
        r = await mgmtos.put(f"/machine/{MAC}/hardware", body)
        assert r.code == 400, (expected, r.code, r.text)
        assert r.json()["error"].startswith(expected.split(":")[0]), (expected, r.text)
    r = await mgmtos.request("PUT", f"/machine/{MAC}/hardware", data=b"[1, 2]")
    assert r.code == 400
    r = await mgmtos.request(
        "PUT", f"/machine/{MAC}/hardware", data=b'{"Arch": "' + b"x" * (2 << 20) + b'"}'
    )
    assert r.code == 413
    assert (await server.admin.get(f"/machine/{MAC}/hardware")).code == 404


@pytest_twisted.ensureDeferred
async def test_machines_are_filtered_by_their_hardware(server):
    small, big, bare = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"
    await add_machine(server, small, "small")
    await add_machine(server, big, "big")
    await add_machine(server, bare, "bare", arch="arm64")
    for mac, memory, cpus, sizes in (
        (small, 2 * GIB, 2, [GIB]),
        (big, 64 * GIB, 32, [GIB, 4096 * GIB]),
    ):
        disks = [{"Name": f"sd{'ab'[i]}", "Size": s} for i, s in enumerate(sizes)]
        body = inventory(Memory=memory, CPU={"Model": "x", "Count": cpus}, Disks=disks)
        r = await server.admin.put(f"/machine/{mac}/hardware", body)
        assert r.code == 200 and r.json()["Source"] == "admin", r.text
    alice = await server.user("alice")

    async def names(query: str) -> list[str]:
        r = await alice.get(f"/machines{query}")
        assert r.code == 200, r.text
        return [m["Name"] for m in r.json()]

    assert await names("") == ["small", "big", "bare"]
    assert await names("?min_memory=8G") == ["big"]
    assert await names(f"?min_memory={2 * GIB}") == ["small", "big"]
    assert await names("?min_cpus=3") == ["big"]
    assert await names("?disk_min_size=2T") == ["big"]
    assert await names("?disk_min_size=1GiB&min_cpus=2") == ["small", "big"]
    assert await names("?arch=amd64") == ["small", "big"]
    assert await names("?arch=aarch64") == ["bare"]
    assert await names("?arch=arm64&min_memory=1") == []
    for query, message in (
        ("?color=red", "color: unknown filter"),
        ("?min_memory=lots", "min_memory: a size"),
        ("?min_memory=99999999999P", "min_memory: too large"),
        ("?min_cpus=-1", "min_cpus: must be at least 1"),
        ("?arch=sparc", "arch: one of"),
    ):
        r = await alice.get(f"/machines{query}")
        assert r.code == 400, (query, r.text)
        assert r.json()["error"].startswith(message), (query, r.text)


@pytest_twisted.ensureDeferred
async def test_a_machine_credential_registers_only_its_own_machine(server):
    await add_machine(server)
    await add_machine(server, OTHER_MAC, "other")
    mgmtos = await credential(server)
    r = await mgmtos.put(f"/machine/{OTHER_MAC}/hardware", INVENTORY)
    assert r.code == 403
    assert (await mgmtos.get(f"/machine/{MAC}/hardware")).code == 403, "reading is for users"
    assert (await server.admin.get(f"/machine/{OTHER_MAC}/hardware")).code == 404
