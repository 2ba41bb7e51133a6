"""Lights-out deploys (issue 13, scenarios a and b): a QEMU VM that is off,
behind a real BMC (sushy-tools' Redfish emulator, pyghmi's IPMI BMC).
Work queued with ``Power: cycle`` must have pxed set the next boot to the
network and power the VM on; the VM netboots the management OS, deploys
the image, and pxed then powers it off (Redfish) or reboots it to its disk
(IPMI), as the work's ``After`` says.  The VM reboots rather than exits
when the management OS is done (no -no-reboot, pxed.after=reboot): only
pxed ends its run."""

from __future__ import annotations

import hashlib

import pytest_twisted
import treq

from tests.helpers import (
    MAC,
    MIB,
    add_machine,
    eventually,
    machine_events,
    new_image,
    new_setup,
    upload_version,
)
from tests.power.bmcs import SYSTEM, netboot_vm, start_ipmi, start_redfish

# The management OS reboots when it is done (its default): the VM goes on.
CMDLINE = "console=ttyS0,115200"


async def start_pxed(start_server, mgmtos):
    server = await start_server(
        static_dir=str(mgmtos),
        config_text=f'[mgmtos.x86_64]\ncmdline = "{CMDLINE}"\n',
        power_timeout=10.0,
        power_retries=2,
    )
    server.port = int(server.url.rsplit(":", 1)[1])
    return server


def blank_disk(tmp_path, size: int):
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(size)
    return disk


async def deploy(server, bmc, disk, after: str, **power) -> tuple[dict, bytes]:
    """Queue a 4 MiB image with Power: cycle and wait for pxed's action
    after the work: (that event, the image)."""
    payload = hashlib.shake_256(b"lights-out").digest(4 * MIB)
    await add_machine(server)
    r = await server.admin.put(f"/machine/{MAC}", {"Power": bmc.settings(**power)})
    assert r.code == 200, r.text
    image = await new_image(server.admin, "lights-out", size=8 * MIB)
    await upload_version(server.admin, image, payload)
    setup = await new_setup(server.admin, "admin", [{"UUID": image}])
    assert bmc.vm_pid() is None, "the VM starts off"

    body = {"SetupUUID": setup["UUID"], "Power": "cycle", "After": after}
    r = await server.admin.post(f"/machine/{MAC}/boot", body)
    assert r.code == 200, r.text
    work = r.json()["ID"]
    wanted = "power.off" if after == "poweroff" else "power.cycle"

    async def done() -> dict | None:
        for e in await machine_events(server.admin):
            if e["Action"] == wanted and e["Actor"] == "pxed" and f"work={work}" in e["Detail"]:
                return e
            if e["Action"] == "queue.failed":
                raise AssertionError(f"the deploy failed: {e['Detail']}\n{serial(bmc)}")
            if e["Action"].startswith("power.") and "failed" in e["Detail"]:
                raise AssertionError(f"{e['Action']} by {e['Actor']}: {e['Detail']}")
        return None

    try:
        await eventually(done, timeout=300)
    except AssertionError as failure:
        happened = [
            (v["Action"], v["Actor"], v["Detail"]) for v in await machine_events(server.admin)
        ]
        raise AssertionError(
            f"{failure}\nevents: {happened}\npower: {bmc.power_log()}\n"
            f"BMC (exit {bmc.process.poll()}): {bmc.log.read_text(errors='replace')[-2000:]}\n"
            f"{serial(bmc)}"
        ) from None
    events = await machine_events(server.admin)
    actions = [(e["Action"], e["Actor"]) for e in events if e["Action"].startswith("power.")]
    # Asked by who queued it, then pxed's after the work.
    assert actions[1:3] == [("power.bootdev", "admin"), ("power.cycle", "admin")], actions
    assert (await server.admin.get(f"/machine/{MAC}")).json()["State"] == "deployed"
    with open(disk, "rb") as f:
        assert f.read(len(payload)) == payload, serial(bmc)
    return await done(), payload


def serial(bmc) -> str:
    path = bmc.vm_dir.parent / "serial.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest_twisted.ensureDeferred
async def test_a_redfish_powers_on_deploys_and_powers_off(start_server, mgmtos, qemu, tmp_path):
    server = await start_pxed(start_server, mgmtos)
    disk = blank_disk(tmp_path, 16 * MIB)
    bmc = start_redfish(tmp_path, netboot_vm(tmp_path, server.port, disk))
    try:
        off, _ = await deploy(server, bmc, disk, "poweroff", System=SYSTEM)
        assert off["Detail"].endswith(": ok"), off
        log = bmc.power_log()
        assert log[0].startswith("on boot=pxe") and log[-1].startswith("off"), log
        assert bmc.vm_pid() is None
        # The BMC says so too.
        r = await treq.get(
            f"{bmc.address}/redfish/v1/Systems/{SYSTEM}", auth=(bmc.username, bmc.password)
        )
        assert (await r.json())["PowerState"] == "Off"
    finally:
        bmc.stop()


@pytest_twisted.ensureDeferred
async def test_b_ipmi_powers_on_deploys_and_reboots_to_disk(start_server, mgmtos, qemu, tmp_path):
    server = await start_pxed(start_server, mgmtos)
    disk = blank_disk(tmp_path, 16 * MIB)
    bmc = start_ipmi(tmp_path, netboot_vm(tmp_path, server.port, disk))
    try:
        cycled, _ = await deploy(server, bmc, disk, "reboot")
        assert cycled["Detail"].endswith(": ok"), cycled
        log = bmc.power_log()
        assert log[0].startswith("on boot=pxe"), log
        # Rebooted by pxed, to the disk, and left on.
        assert log[-2].startswith("off") and log[-1].startswith("on boot=disk"), log
        assert bmc.vm_pid() is not None
    finally:
        bmc.stop()
