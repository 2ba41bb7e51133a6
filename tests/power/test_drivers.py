"""The power drivers (pxed/power/) against real BMCs: sushy-tools' Redfish
emulator and pyghmi's IPMI BMC, each driving a QEMU VM with nothing to boot
(the full netboot is tests/e2e/test_power.py).  What the VM went through
is read from the BMC's side (its power log, the QEMU process)."""

from __future__ import annotations

import pytest
import pytest_twisted

from pxed.testing.vm import pid_alive
from tests.helpers import (
    MAC,
    add_machine,
    eventually,
    machine_client,
    machine_events,
    new_image,
    new_setup,
    only_on,
)
from tests.power.bmcs import idle_vm, start_ipmi, start_redfish

pytestmark = [
    pytest.mark.slow,
    only_on("sqlite", "these are about BMCs; the settings' storage is in tests/web/test_power.py"),
]


@pytest.fixture(params=["redfish", "ipmi"])
def bmc(request, tmp_path):
    start = start_redfish if request.param == "redfish" else start_ipmi
    bmc = start(tmp_path, idle_vm(tmp_path))
    yield bmc
    bmc.stop()


async def power_server(start_server, bmc, **power):
    server = await start_server(power_timeout=10.0, power_retries=1)
    await add_machine(server)
    r = await server.admin.put(f"/machine/{MAC}", {"Power": bmc.settings(**power)})
    assert r.code == 200, r.text
    return server


async def power(server, action: str) -> dict:
    r = await server.admin.post(f"/machine/{MAC}/power", {"Action": action})
    assert r.code == 200, r.text
    return r.json()


@pytest_twisted.ensureDeferred
async def test_on_cycle_off(start_server, bmc):
    server = await power_server(start_server, bmc)
    assert (await power(server, "on"))["State"] == "on"
    first = bmc.vm_pid()
    assert first is not None and pid_alive(first)
    r = await server.admin.get(f"/machine/{MAC}/power")
    assert r.code == 200 and r.json()["State"] == "on", r.text

    assert (await power(server, "cycle"))["State"] == "on"
    second = bmc.vm_pid()
    assert second is not None and second != first and not pid_alive(first)

    assert (await power(server, "off"))["State"] == "off"
    assert bmc.vm_pid() is None and not pid_alive(second)
    assert [line.split()[0] for line in bmc.power_log()] == ["on", "off", "on", "off"]
    # Cycling a machine that is off powers it on.
    assert (await power(server, "cycle"))["State"] == "on"

    done = [e for e in await machine_events(server.admin) if e["Action"].startswith("power.")]
    assert [(e["Action"], e["Actor"]) for e in done[1:]] == [
        ("power.on", "admin"),
        ("power.cycle", "admin"),
        ("power.off", "admin"),
        ("power.cycle", "admin"),
    ]
    assert all(e["Detail"].startswith("ok") for e in done[1:])
    # The password reached the BMC and nothing else.
    for path in (f"/machine/{MAC}", f"/machine/{MAC}/events", "/events", "/machines"):
        assert bmc.password not in (await server.admin.get(path)).text


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_fails_with_the_reason(start_server, bmc):
    server = await power_server(start_server, bmc, Password="not-the-password")
    r = await server.admin.post(f"/machine/{MAC}/power", {"Action": "on"})
    assert r.code == 502, r.text
    error = r.json()["error"]
    assert ("HTTP 401" if bmc.driver == "redfish" else "IPMI") in error, error
    assert bmc.vm_pid() is None
    [event] = [e for e in await machine_events(server.admin) if e["Action"] == "power.on"]
    assert event["Detail"].startswith("failed: ")
    assert "not-the-password" not in event["Detail"]


@pytest_twisted.ensureDeferred
async def test_the_flow_powers_on_to_the_network_and_off_after(start_server, bmc):
    """Queue with Power "on": the next boot from the network, then power;
    complete: power off (what the work's After says)."""
    server = await power_server(start_server, bmc, OnQueue="on", After="poweroff")
    image = await new_image(server.admin)
    setup = await new_setup(server.admin, "admin", [{"UUID": image}])
    r = await server.admin.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})
    assert r.code == 200, r.text
    work = r.json()
    assert work["After"] == "poweroff"

    async def event(action: str) -> dict | None:
        for e in await machine_events(server.admin):
            if e["Action"] == action and f"work={work['ID']}" in e["Detail"]:
                return e
        return None

    await eventually(lambda: event("power.on"), timeout=60)
    assert (await event("power.bootdev"))["Detail"].endswith(": ok")
    assert (await event("power.on"))["Actor"] == "admin"
    assert bmc.power_log()[0].startswith("on boot=pxe"), bmc.power_log()

    # The management OS takes the work and reports it done.
    agent = await machine_client(server)
    assert (await agent.get(f"/machine/{MAC}/boot")).code == 200
    r = await agent.post(f"/machine/{MAC}/boot/complete", {"Success": True})
    assert r.code == 200, r.text
    await eventually(lambda: event("power.off"), timeout=60)
    off = await event("power.off")
    assert off["Actor"] == "pxed" and off["Detail"].endswith(": ok"), off
    assert bmc.vm_pid() is None
    assert bmc.power_log()[-1].startswith("off")


@pytest_twisted.ensureDeferred
async def test_redfish_verifies_tls_unless_told_not_to(start_server, tmp_path):
    """A BMC with its factory self-signed certificate: refused by default,
    driven once the machine's settings say VerifyTLS false."""
    bmc = start_redfish(tmp_path, idle_vm(tmp_path), tls=True)
    try:
        server = await power_server(start_server, bmc)
        r = await server.admin.post(f"/machine/{MAC}/power", {"Action": "on"})
        assert r.code == 502, r.text
        assert "certificate" in r.json()["error"].lower(), r.text
        assert bmc.vm_pid() is None
        r = await server.admin.put(f"/machine/{MAC}", {"Power": bmc.settings(VerifyTLS=False)})
        assert r.code == 200, r.text
        assert (await power(server, "on"))["State"] == "on"
        assert bmc.vm_pid() is not None
    finally:
        bmc.stop()
