"""Enlistment (config ``enlist``): an unknown MAC that netboots from a boot
network gets the management OS in enlist mode with a credential that can
register that MAC's inventory and nothing else; the machine then waits,
unmanaged, for an admin."""

from __future__ import annotations

import pytest_twisted
import sqlalchemy as sa

from pxed.db.schema import enlist_credentials
from tests.helpers import MAC, WriteLock, add_machine, new_image
from tests.web.test_hardware import INVENTORY

UNKNOWN = "52:54:00:0e:00:01"


def cmdline_token(answer: dict) -> str:
    return answer["cmdline"].split("pxed.token=")[1].split()[0]


async def enlist_token(server, mac: str = UNKNOWN) -> str:
    r = await server.anonymous.get(f"/v1/boot/{mac}")
    assert r.code == 200, r.text
    assert "pxed.mode=enlist" in r.json()["cmdline"].split()
    return cmdline_token(r.json())


async def live(server) -> int:
    def count(conn):
        return conn.execute(sa.select(sa.func.count()).select_from(enlist_credentials)).scalar()

    return await server.db.read(count)


@pytest_twisted.ensureDeferred
async def test_off_by_default_unknown_macs_boot_locally(server):
    r = await server.anonymous.get(f"/v1/boot/{UNKNOWN}")
    assert r.code == 404 and "unknown MAC" in r.text
    assert await live(server) == 0


@pytest_twisted.ensureDeferred
async def test_one_credential_per_mac_repeated_from_memory(start_server):
    server = await start_server(enlist=True)
    token = await enlist_token(server)
    assert token.startswith("pxe_")
    # Every later answer comes from the boot view: with writes to the
    # database locked out they still answer, the same credential.
    lock = WriteLock(server, "enlist_credentials").take()
    try:
        tokens = {await enlist_token(server) for _ in range(20)}
        script = (await server.anonymous.get(f"/ipxe/{UNKNOWN.upper()}")).text
    finally:
        lock.close()
    assert tokens == {token}
    assert f"pxed.token={token}" in script and "pxed.mode=enlist" in script
    assert await live(server) == 1
    # Another unknown MAC gets its own.
    assert await enlist_token(server, "52:54:00:0e:00:02") != token
    assert await live(server) == 2


@pytest_twisted.ensureDeferred
async def test_enlisting_is_bounded_by_max_enlisting(start_server):
    server = await start_server(enlist=True, max_enlisting=2)
    for i in range(2):
        await enlist_token(server, f"52:54:00:0e:00:0{i}")
    for _ in range(3):
        r = await server.anonymous.get("/v1/boot/52:54:00:0e:00:09")
        assert r.code == 404 and "enlistment is full" in r.text, r.text
    assert await live(server) == 2
    # Those already enlisting still get theirs.
    assert (await server.anonymous.get("/v1/boot/52:54:00:0e:00:01")).code == 200


@pytest_twisted.ensureDeferred
async def test_machines_waiting_for_an_admin_count_towards_the_bound(start_server):
    server = await start_server(enlist=True, max_enlisting=2)
    first, second, third = (f"52:54:00:0e:00:0{i}" for i in range(1, 4))
    enlisting = server.anonymous.bearer(await enlist_token(server, first))
    assert (await enlisting.put(f"/machine/{first}/hardware", INVENTORY)).code == 201
    # One waits for an admin, one enlists: the third boots locally.
    await enlist_token(server, second)
    r = await server.anonymous.get(f"/v1/boot/{third}")
    assert r.code == 404 and "enlistment is full" in r.text
    # Accepted: no longer waiting.
    assert (await server.admin.put(f"/machine/{first}", {"Managed": True})).code == 200
    await enlist_token(server, third)


@pytest_twisted.ensureDeferred
async def test_only_boot_networks_enlist(start_server):
    server = await start_server(enlist=True, boot_networks=["10.0.0.0/8"])
    r = await server.anonymous.get(f"/v1/boot/{UNKNOWN}")
    assert r.code == 404 and "not on a boot network" in r.text
    assert await live(server) == 0


@pytest_twisted.ensureDeferred
async def test_the_credential_registers_its_inventory_once_and_the_machine_waits(start_server):
    server = await start_server(enlist=True, boot_policy="always")
    enlisting = server.anonymous.bearer(await enlist_token(server))
    r = await enlisting.put(f"/machine/{UNKNOWN}/hardware", {**INVENTORY, "Arch": "aarch64"})
    assert r.code == 201, r.text
    assert r.json()["Source"] == "enlist"
    machine = (await server.admin.get(f"/machine/{UNKNOWN}")).json()
    assert machine["State"] == "new" and machine["Managed"] is False
    assert machine["Name"] == UNKNOWN and machine["Architecture"] == "arm64"
    hardware = (await server.admin.get(f"/machine/{UNKNOWN}/hardware")).json()
    assert hardware["Disks"] == INVENTORY["Disks"] and hardware["Source"] == "enlist"
    events = (await server.admin.get(f"/machine/{UNKNOWN}/events")).json()
    created = [e for e in events if e["Action"] == "machine.create"]
    assert created and created[0]["Actor"] == f"enlist:{UNKNOWN}"
    # Spent: it registers nothing again, and the MAC is a machine now,
    # not managed: it boots from its disk until an admin accepts it.
    r = await enlisting.put(f"/machine/{UNKNOWN}/hardware", INVENTORY)
    assert r.code == 401
    assert await live(server) == 0
    r = await server.anonymous.get(f"/v1/boot/{UNKNOWN}")
    assert r.code == 404 and "not managed" in r.text
    r = await server.admin.put(f"/machine/{UNKNOWN}", {"Managed": True})
    assert r.code == 200 and r.json()["Managed"] is True
    r = await server.anonymous.get(f"/v1/boot/{UNKNOWN}")
    assert r.code == 200 and "pxed.mode" not in r.json()["cmdline"]
    assert cmdline_token(r.json()).startswith("pxm_")


@pytest_twisted.ensureDeferred
async def test_the_credential_can_do_nothing_else(start_server):
    server = await start_server(enlist=True)
    await add_machine(server)
    alice = await server.user("alice")
    image = await new_image(alice)
    token = await enlist_token(server)
    enlisting = server.anonymous.bearer(token)
    refused = [
        ("GET", f"/machine/{UNKNOWN}/boot"),
        ("POST", f"/machine/{UNKNOWN}/boot/complete"),
        ("POST", f"/machine/{UNKNOWN}/progress"),
        ("GET", f"/machine/{UNKNOWN}/hardware"),
        ("POST", "/log"),
        ("GET", f"/image/{image}/0"),
        ("GET", f"/image/{image}/latest"),
        ("POST", f"/image/{image}"),
        ("GET", "/machines"),
        ("GET", f"/machine/{MAC}"),
        ("POST", "/machine"),
        ("PUT", f"/machine/{UNKNOWN}"),
        ("GET", "/user/me"),
        # Another MAC's inventory, a known machine's included.
        ("PUT", f"/machine/{MAC}/hardware"),
        ("PUT", "/machine/52:54:00:0e:00:02/hardware"),
    ]
    for method, path in refused:
        r = await enlisting.request(method, path, json_body=INVENTORY)
        assert r.code == 403, (method, path, r.code, r.text)
    assert (await server.admin.get(f"/machine/{MAC}/hardware")).code == 404
    # An admin-made machine takes the MAC: the credential is spent.
    await add_machine(server, UNKNOWN, "late")
    r = await enlisting.put(f"/machine/{UNKNOWN}/hardware", INVENTORY)
    assert r.code == 403 and "spent" in r.text
    r = await server.anonymous.bearer("pxe_" + token[4:-2] + "xx").get("/machines")
    assert r.code == 401
