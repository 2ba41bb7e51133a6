"""Enlistment end to end: a VM pxed has never heard of netboots, the
management OS in enlist mode sends its inventory, and pxed's record of it
matches the VM's configuration."""

from __future__ import annotations

import pytest_twisted

from tests.e2e.test_netboot import blank_disk
from tests.helpers import MIB
from tests.vmfixtures import run_vm

VM_MAC = "52:54:00:e1:15:70"
MEMORY_MIB = 640
DISKS = (48 * MIB, 80 * MIB + 512)
# What the kernel keeps for itself out of the VM's RAM (its code and data,
# the firmware's reserved ranges, the crash kernel's none): MemTotal is
# less than the RAM by this much at most.
KERNEL_SLACK = 96 * MIB


@pytest_twisted.ensureDeferred
async def test_an_unknown_vm_enlists_with_its_inventory(start_netboot, qemu, tmp_path):
    server = await start_netboot(enlist=True)
    disks = [blank_disk(tmp_path, f"disk{i}.raw", size) for i, size in enumerate(DISKS)]

    run = await run_vm(qemu, tmp_path, disks, port=server.port, memory_mib=MEMORY_MIB, mac=VM_MAC)
    assert run.exit_code == 0, run.serial[-3000:]
    assert "enlisted" in run.serial, run.serial[-3000:]
    r = await server.admin.get(f"/machine/{VM_MAC}")
    assert r.code == 200, run.serial[-3000:]
    machine = r.json()
    assert (machine["State"], machine["Managed"], machine["Architecture"]) == (
        "new",
        False,
        "x86_64",
    )

    hardware = (await server.admin.get(f"/machine/{VM_MAC}/hardware")).json()
    assert hardware["Source"] == "enlist"
    memory = MEMORY_MIB * MIB
    assert memory - KERNEL_SLACK <= hardware["Memory"] <= memory, hardware["Memory"]
    assert [(d["Name"], d["Size"]) for d in hardware["Disks"]] == [
        ("vda", DISKS[0]),
        ("vdb", DISKS[1]),
    ]
    assert [n["MAC"] for n in hardware["NICs"]] == [VM_MAC]
    assert hardware["NICs"][0]["Driver"] == "virtio_net" and hardware["NICs"][0]["Link"] is True
    assert hardware["Firmware"] == "bios" and hardware["Arch"] == "x86_64"
    assert hardware["CPU"]["Count"] == 1 and hardware["CPU"]["Model"]
    assert hardware["DMI"]["Vendor"] == "QEMU", hardware["DMI"]
    print(f"\nenlisted in {run.seconds:.1f} s: {hardware}")
