"""A lease's end re-images its machine (issue 24): when alice's lease ends
pxed queues the machine's LeaseSetupUUID as its owner's work, and the VM
netbooting next writes it, with the filesystem left on a second disk
erased (the re-image is not the work of whoever used the disks last)."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest_twisted

from tests.e2e.test_netboot import blank_disk, data
from tests.helpers import MAC, MIB, add_machine, eventually, new_image, upload_version
from tests.vmfixtures import run_vm


@pytest_twisted.ensureDeferred
async def test_an_ended_lease_reimages_the_machine(start_netboot, qemu, tmp_path):
    server = await start_netboot(lease_check_interval=0.2)
    await add_machine(server, name="leased")
    base = await new_image(server.admin, "base")
    payload = data(8 * MIB, seed=11)
    version = await upload_version(server.admin, base, payload)
    r = await server.admin.post(
        "/user/admin/image_setup",
        {"Name": "lab default", "Images": [{"UUID": base, "Version": version}]},
    )
    setup = r.json()["UUID"]
    r = await server.admin.put(f"/machine/{MAC}", {"LeaseEnd": "reimage", "LeaseSetupUUID": setup})
    assert r.code == 200, r.text
    # Alice's lease ends in two seconds; her data is on a second disk.
    alice = await server.user("alice")
    end = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).isoformat()
    assert (await alice.post("/leases", {"Machines": ["leased"], "End": end})).code == 201
    disk = blank_disk(tmp_path, "disk.raw", 32 * MIB)
    hers = blank_disk(tmp_path, "hers.raw", 16 * MIB)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-F", str(hers)], check=True)

    async def queued() -> bool:
        return bool((await server.admin.get(f"/machine/{MAC}/boot/queue")).json())

    await eventually(queued, timeout=15)
    [work] = (await server.admin.get(f"/machine/{MAC}/boot/queue")).json()
    assert (work["Username"], work["SetupUUID"]) == ("admin", setup)

    run = await run_vm(qemu, tmp_path, [disk, hers], port=server.port)

    assert run.exit_code == 0, run.serial[-3000:]
    with open(disk, "rb") as f:
        assert f.read(len(payload)) == payload
    probe = subprocess.run(["blkid", "-p", str(hers)], capture_output=True, text=True)
    assert probe.returncode == 2, f"her filesystem is still there: {probe.stdout}"
    machine = (await server.admin.get(f"/machine/{MAC}")).json()
    assert (machine["State"], machine["LastUser"]) == ("deployed", "admin"), run.serial[-3000:]
    actions = [e["Action"] for e in (await server.admin.get(f"/machine/{MAC}/events")).json()]
    assert "lease.end" in actions and "machine.erase" in actions
