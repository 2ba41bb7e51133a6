"""pxectl machines hardware and power (against sushy-tools' Redfish
emulator with its fake systems driver: a real Redfish server, no VM), and
logs -f."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import pytest
import pytest_twisted

from tests.helpers import MAC, add_machine, free_port, machine_client, missing, new_image, new_setup
from tests.web.test_hardware import INVENTORY

FAKE_SYSTEM = "27946b59-9e44-4fa7-8e91-f3527a1ef094"  # sushy-tools' fake driver's system


@pytest_twisted.ensureDeferred
async def test_hardware(server, pxectl):
    await add_machine(server)
    assert (await pxectl("machines", "hardware", MAC)).code == 4
    assert (await server.admin.put(f"/machine/{MAC}/hardware", INVENTORY)).code == 200
    hw = (await pxectl.ok("machines", "hardware", MAC, "--json")).json()
    assert (hw["Memory"], [d["Name"] for d in hw["Disks"]]) == (
        INVENTORY["Memory"],
        ["vda", "nvme0n1"],
    )
    shown = (await pxectl.ok("machines", "hardware", MAC)).out
    assert "Disks:" in shown and "nvme0n1" in shown


@pytest.fixture
def redfish_bmc(tmp_path):
    """sushy-emulator --fake on a loopback port; its URL."""
    emulator = shutil.which("sushy-emulator") or missing("sushy-emulator: pip install sushy-tools")
    port = free_port()
    config = tmp_path / "sushy.conf"
    config.write_text(f"SUSHY_EMULATOR_STATE_DIR = {str(tmp_path / 'state')!r}\n")
    proc = subprocess.Popen(
        [
            emulator,
            "--fake",
            "--interface",
            "127.0.0.1",
            "--port",
            str(port),
            "--config",
            str(config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "sushy-emulator exited"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest_twisted.ensureDeferred
async def test_power(server, pxectl, redfish_bmc):
    await add_machine(server)
    r = await pxectl("machines", "power", MAC, "status")
    assert r.code == 1 and r.err.startswith("Error: 409 Conflict: ") and "no power driver" in r.err
    power = {"Driver": "redfish", "Address": redfish_bmc, "System": FAKE_SYSTEM}
    assert (await server.admin.put(f"/machine/{MAC}", {"Power": power})).code == 200
    status = (await pxectl.ok("machines", "power", MAC, "status", "--json")).json()
    assert (status["Driver"], status["State"]) == ("redfish", "off")
    # The fake BMC applies a change a few seconds later: the answer is the
    # state the BMC reported when asked; what it was asked is in the events.
    done = (await pxectl.ok("machines", "power", MAC, "on", "--json")).json()
    assert (done["Action"], done["State"] in ("on", "off")) == ("on", True)
    assert (await pxectl.ok("machines", "power", MAC, "status")).out.startswith(f"{MAC}: ")
    for action in ("cycle", "off"):
        done = (await pxectl.ok("machines", "power", MAC, action, "--json")).json()
        assert done["Action"] == action
    events = (await pxectl.ok("events", MAC, "--json")).json()
    for action in ("power.on", "power.cycle", "power.off"):
        assert any(e["Action"] == action and e["Detail"].startswith("ok") for e in events), action
    assert (await pxectl("machines", "power", MAC, "explode")).code == 2


@pytest_twisted.ensureDeferred
async def test_logs_follow_until_the_work_ends(server, pxectl):
    await add_machine(server)
    image = await new_image(server.admin)
    setup = await new_setup(server.admin, "admin", [{"UUID": image}])
    assert (
        await server.admin.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})
    ).code == 200
    mgmtos = await machine_client(server)
    assert (await mgmtos.post("/log", {"Message": "first"})).code == 200
    following = pxectl("logs", MAC, "-f", "--json")
    assert (await mgmtos.get(f"/machine/{MAC}/boot")).code == 200
    assert (await mgmtos.post("/log", {"Message": "second"})).code == 200
    assert (await mgmtos.post(f"/machine/{MAC}/boot/complete", {"Success": True})).code == 200
    r = await following  # ended by itself, with the work
    assert r.code == 0, r
    assert [json.loads(line)["Message"] for line in r.out.splitlines()] == ["first", "second"]
