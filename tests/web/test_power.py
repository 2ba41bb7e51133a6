"""A machine's power settings through the API (pxed/web/power.py): the
BMC password is sealed, never in an answer, a log line or an event; bad
settings are refused; power needs a driver.  The BMCs themselves are in
tests/power/ and tests/e2e/test_power.py."""

from __future__ import annotations

import stat

import pytest
import pytest_twisted
import sqlalchemy as sa

from pxed.db.schema import machine_power
from tests.helpers import MAC, add_machine, machine_events, new_image, new_setup

PASSWORD = "Tr0ub4dor-&-3-never-shown"


def redfish(**more) -> dict:
    return {
        "Driver": "redfish",
        # Nothing listens there: power actions fail with the reason.
        "Address": "http://127.0.0.1:9",
        "Username": "root",
        "Password": PASSWORD,
        "System": "System.Embedded.1",
        "VerifyTLS": False,
        **more,
    }


@pytest_twisted.ensureDeferred
async def test_the_password_is_sealed_and_never_shown(server, logged):
    answers: list[bytes] = []
    await add_machine(server)

    async def call(method: str, path: str, body=None, code: int = 200) -> dict:
        r = await server.admin.request(method, path, json_body=body)
        answers.append(r.body)
        assert r.code == code, r.text
        return r.json()

    machine = await call("PUT", f"/machine/{MAC}", {"Power": redfish(After="poweroff")})
    assert machine["Power"] == {
        "Driver": "redfish",
        "Address": "http://127.0.0.1:9",
        "Username": "root",
        "System": "System.Embedded.1",
        "VerifyTLS": False,
        "OnQueue": "none",
        "After": "poweroff",
        "PasswordSet": True,
    }
    # An answer sent back as it is (no Password) keeps the password.
    again = await call("PUT", f"/machine/{MAC}", {"Power": machine["Power"]})
    assert again["Power"]["PasswordSet"] is True
    # The machine created with settings by the original's PUT /machine.
    body = {"Name": "other", "MacAddress": {"Address": "52:54:00:00:00:02"}, "Power": redfish()}
    assert (await call("PUT", "/machine", body))["Power"]["PasswordSet"] is True
    await call("GET", f"/machine/{MAC}")
    await call("GET", "/machines")
    # A power action that fails (nothing listens) says why, not the password.
    failed = await call("POST", f"/machine/{MAC}/power", {"Action": "on"}, code=502)
    assert "connection refused" in failed["error"], failed
    await call("GET", f"/machine/{MAC}/power", code=502)
    events = await call("GET", f"/machine/{MAC}/events")
    assert any(e["Action"] == "power.on" and "failed" in e["Detail"] for e in events)
    assert any(e["Action"] == "power.settings" and "password=set" in e["Detail"] for e in events)
    await call("GET", "/events")
    await call("GET", "/openapi.json")

    for body in answers:
        assert PASSWORD.encode() not in body
    assert not [line for line in logged if PASSWORD in line]
    # Stored sealed (AES-GCM), under a key made once, readable by pxed only.
    rows = await server.db.run(
        lambda conn: conn.execute(sa.select(machine_power.c.password_sealed)).scalars().all()
    )
    assert len(rows) == 2 and all(r.startswith("v1:") and PASSWORD not in r for r in rows)
    assert rows[0] != rows[1], "a nonce of its own per password"
    key = server.config.data_dir / "power.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest_twisted.ensureDeferred
async def test_settings_are_replaced_or_removed(server):
    await add_machine(server)
    r = await server.admin.put(f"/machine/{MAC}", {"Power": redfish()})
    assert r.code == 200, r.text
    # An empty password removes it; other fields replace the old ones.
    ipmi = {"Driver": "IPMI", "Address": "10.0.0.22:6230", "Username": "u", "Password": ""}
    r = await server.admin.put(f"/machine/{MAC}", {"Power": ipmi})
    assert r.code == 200, r.text
    power = r.json()["Power"]
    assert (power["Driver"], power["Address"], power["PasswordSet"]) == (
        "ipmi",
        "10.0.0.22:6230",
        False,
    )
    assert power["VerifyTLS"] is True and power["System"] == ""
    for gone in (None, {"Driver": "none"}):
        r = await server.admin.put(f"/machine/{MAC}", {"Power": redfish()})
        r = await server.admin.put(f"/machine/{MAC}", {"Power": gone})
        assert r.code == 200, r.text
        assert r.json()["Power"]["Driver"] == "none"
        assert r.json()["Power"]["PasswordSet"] is False
    # Other changes leave the settings alone.
    await server.admin.put(f"/machine/{MAC}", {"Power": redfish()})
    r = await server.admin.put(f"/machine/{MAC}", {"Name": "renamed"})
    assert r.json()["Power"]["Driver"] == "redfish"


@pytest.mark.parametrize(
    "power, message",
    [
        ({"Driver": "wol", "Address": "x"}, "Power.Driver: must be one of"),
        ({"Address": "10.0.0.21"}, "Power.Driver: required"),
        ({"Driver": "redfish"}, "Power.Address: required"),
        ({"Driver": "redfish", "Address": "ftp://bmc"}, "Power.Address"),
        ({"Driver": "ipmi", "Address": "bmc:http"}, "Power.Address"),
        ({"Driver": "ipmi", "Address": "bmc", "After": "explode"}, "Power.After"),
        ({"Driver": "ipmi", "Address": "bmc", "OnQueue": "maybe"}, "Power.OnQueue"),
        ({"Driver": "ipmi", "Address": "bmc", "VerifyTLS": "no"}, "VerifyTLS"),
        ({"Driver": "ipmi", "Address": "bmc", "Password": "x" * 21}, "at most 20 bytes"),
        ("redfish", "Power: must be an object"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_settings_are_refused_and_change_nothing(server, power, message):
    await add_machine(server)
    r = await server.admin.put(f"/machine/{MAC}", {"Name": "changed", "Power": power})
    assert r.code == 400, r.text
    assert message in r.json()["error"]
    assert (await server.admin.get(f"/machine/{MAC}")).json()["Name"] == "m"


@pytest_twisted.ensureDeferred
async def test_power_needs_a_driver(server):
    await add_machine(server)
    for method, body in (("GET", None), ("POST", {"Action": "cycle"})):
        r = await server.admin.request(method, f"/machine/{MAC}/power", json_body=body)
        assert r.code == 409, r.text
        assert "no power driver" in r.json()["error"]
    r = await server.admin.post(f"/machine/{MAC}/power", {"Action": "explode"})
    assert r.code == 400, r.text
    # Queueing with power on a machine without a driver queues nothing.
    image = await new_image(server.admin)
    setup = await new_setup(server.admin, "admin", [{"UUID": image}])
    for extra in ({"Power": "cycle"}, {"After": "poweroff"}):
        r = await server.admin.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"], **extra})
        assert r.code == 409, r.text
    assert (await server.admin.get(f"/machine/{MAC}/boot/queue")).json() == []
    # Without either, queueing is as before and the work does nothing after.
    r = await server.admin.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})
    assert r.code == 200, r.text
    assert r.json()["After"] == "none"


@pytest_twisted.ensureDeferred
async def test_who_may_use_a_machines_power(server):
    """Admins, and users while they have work queued on the machine."""
    await add_machine(server)
    await server.admin.put(f"/machine/{MAC}", {"Power": redfish(OnQueue="none")})
    alice = await server.user("alice")
    mod = await server.user("mod", "moderator")
    for client in (alice, mod):
        assert (await client.get(f"/machine/{MAC}/power")).code == 403
    image = await new_image(alice)
    setup = await new_setup(alice, "alice", [{"UUID": image}])
    r = await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})
    assert r.code == 200, r.text
    work = r.json()["ID"]
    # Allowed now: the BMC (nothing there) is what fails.
    r = await alice.post(f"/machine/{MAC}/power", {"Action": "cycle"})
    assert r.code == 502, r.text
    assert (await mod.get(f"/machine/{MAC}/power")).code == 403
    failed = [e for e in await machine_events(alice) if e["Action"] == "power.cycle"]
    assert failed and failed[-1]["Actor"] == "alice"
    # Her work cancelled, the machine's power is not hers any more.
    assert (await alice.delete(f"/machine/{MAC}/boot/queue/{work}")).code == 200
    assert (await alice.get(f"/machine/{MAC}/power")).code == 403
