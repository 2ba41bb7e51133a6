"""The boot queue as users see it: POST /machine/{mac}/boot, GET and DELETE
…/boot/queue."""

from __future__ import annotations

import pytest_twisted

from tests.helpers import (
    MAC,
    MIB,
    OCTETS,
    Client,
    add_machine,
    entries,
    machine_client,
    machine_events,
    new_image,
    new_setup,
)


async def queue_of(client, mac: str = MAC) -> list:
    r = await client.get(f"/machine/{mac}/boot/queue")
    assert r.code == 200, r.text
    return r.json()


async def queued_image(server) -> tuple[Client, str, dict]:
    """A managed machine with one image of alice's queued in the
    single-image form: (alice, the image, the queue entry)."""
    await add_machine(server)
    alice = await server.user("alice")
    disk = await new_image(alice)
    r = await alice.post(f"/machine/{MAC}/boot", {"ImageUUID": disk})
    assert r.code == 200, r.text
    return alice, disk, r.json()


async def replace_latest(client, image: str, data: bytes):
    """*data* written over the image's latest version (X-BAAS-NewVersion:
    false); the answer in plain text."""
    return await client.request(
        "POST", f"/image/{image}", data=data, headers={**OCTETS, "X-BAAS-NewVersion": "false"}
    )


@pytest_twisted.ensureDeferred
async def test_queue_a_setup_users_see_their_own_entries_admins_all(server):
    await add_machine(server)
    alice, bob = await server.user("alice"), await server.user("bob")
    a = await new_image(alice)
    b = await new_image(bob)
    setup_a = await new_setup(alice, "alice", [{"UUID": a, "Update": True}], "web")
    setup_b = await new_setup(bob, "bob", [{"UUID": b}])

    r = await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup_a["UUID"]})
    assert r.code == 200, r.text
    work_a = r.json()
    assert work_a["State"] == "queued"
    assert work_a["SetupUUID"] == setup_a["UUID"]
    assert work_a["Name"] == "web"
    assert work_a["Username"] == "alice"
    assert work_a["Mac"] == MAC
    assert work_a["Images"] == [{"UUID": a, "Version": 0, "Update": True, "DiskHints": None}]
    assert work_a["StartedAt"] is None and work_a["FinishedAt"] is None
    # The MAC may be given in any accepted spelling.
    r = await bob.post(
        f"/machine/{MAC.upper().replace(':', '-')}/boot", {"SetupUUID": setup_b["UUID"]}
    )
    assert r.code == 200, r.text
    work_b = r.json()

    assert [w["ID"] for w in await queue_of(alice)] == [work_a["ID"]]
    assert [w["ID"] for w in await queue_of(bob)] == [work_b["ID"]]
    assert [w["ID"] for w in await queue_of(server.admin)] == [work_a["ID"], work_b["ID"]]
    assert (await queue_of(server.admin))[0] == work_a

    queued = [e for e in await machine_events(alice) if e["Action"] == "queue.add"]
    assert [e["Actor"] for e in queued] == ["alice", "bob"]
    assert f"work={work_a['ID']}" in queued[0]["Detail"]


@pytest_twisted.ensureDeferred
async def test_single_image_form_wraps_the_image_into_a_setup(server):
    await add_machine(server, name="box")
    alice = await server.user("alice")
    disk = await new_image(alice)

    r = await alice.post(f"/machine/{MAC}/boot", {"ImageUUID": disk, "Version": 0, "Update": True})
    assert r.code == 200, r.text
    work = r.json()
    assert work["ImageUUID"] == disk and work["Version"] == 0
    assert work["Images"] == [{"UUID": disk, "Version": 0, "Update": True, "DiskHints": None}]
    assert work["State"] == "queued"

    setups = (await alice.get("/user/alice/image_setups")).json()
    assert len(setups) == 1
    assert setups[0]["UUID"] == work["SetupUUID"]
    assert setups[0]["Username"] == "alice"
    assert entries(setups[0]) == [{"UUID": disk, "Version": 0, "Update": True}]
    assert [w["ID"] for w in await queue_of(alice)] == [work["ID"]]


@pytest_twisted.ensureDeferred
async def test_refused_requests_queue_nothing(server):
    m = await add_machine(server)
    alice, bob = await server.user("alice"), await server.user("bob")
    disk = await new_image(alice)
    theirs = await new_image(bob)
    setup = await new_setup(alice, "alice", [{"UUID": disk}])
    empty = await new_setup(alice, "alice", [], "empty")

    for client, body, code in [
        (alice, {}, 400),
        (alice, {"SetupUUID": "no-such-setup"}, 400),
        (alice, {"SetupUUID": empty["UUID"]}, 400),
        (alice, {"SetupUUID": setup["UUID"], "Update": "yes"}, 400),
        (bob, {"SetupUUID": setup["UUID"]}, 403),
        (alice, {"ImageUUID": theirs, "Version": 0}, 403),
        (alice, {"ImageUUID": disk, "Version": 3}, 400),
        (alice, {"ImageUUID": "no-such-image"}, 400),
        # The machine's private image is the management OS's business.
        (server.admin, {"ImageUUID": m["ImageUUID"]}, 400),
    ]:
        r = await client.post(f"/machine/{MAC}/boot", body)
        assert r.code == code, (body, r.code, r.text)
    r = await alice.post("/machine/52:54:00:00:00:99/boot", {"SetupUUID": setup["UUID"]})
    assert r.code == 404
    assert (
        await server.anonymous.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})
    ).code == 401

    assert await queue_of(server.admin) == []
    assert len((await alice.get("/user/alice/image_setups")).json()) == 2
    assert (await server.admin.get("/user/admin/image_setups")).json() == []
    r = await server.anonymous.get(f"/v1/boot/{MAC}")
    assert r.code == 404, "nothing queued, so nothing to netboot for"


@pytest_twisted.ensureDeferred
async def test_unmanaged_machine_is_refused(server):
    await add_machine(server, managed=False)
    alice = await server.user("alice")
    disk = await new_image(alice)
    setup = await new_setup(alice, "alice", [{"UUID": disk}])

    r = await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})
    assert r.code == 409, r.text
    assert "managed" in r.json()["error"]
    r = await alice.post(f"/machine/{MAC}/boot", {"ImageUUID": disk, "Version": 0})
    assert r.code == 409, r.text
    assert await queue_of(server.admin) == []
    # The refused single-image form left no setup behind either.
    assert [s["UUID"] for s in (await alice.get("/user/alice/image_setups")).json()] == [
        setup["UUID"]
    ]


@pytest_twisted.ensureDeferred
async def test_cancel(server):
    await add_machine(server)
    alice, bob = await server.user("alice"), await server.user("bob")
    mod = await server.user("mod", "moderator")
    disk = await new_image(alice)
    setup = await new_setup(alice, "alice", [{"UUID": disk}])
    first = (await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})).json()
    second = (await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})).json()
    third = (await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})).json()

    # The management OS takes the first: in progress, it cannot be cancelled.
    machine = await machine_client(server)
    assert (await machine.get(f"/machine/{MAC}/boot")).json()["ID"] == first["ID"]
    r = await alice.delete(f"/machine/{MAC}/boot/queue/{first['ID']}")
    assert r.code == 409, r.text
    assert (await queue_of(alice))[0]["State"] == "in-progress"

    # Somebody else's entry: refused, still queued.
    r = await bob.delete(f"/machine/{MAC}/boot/queue/{second['ID']}")
    assert r.code == 403, r.text
    assert [w["ID"] for w in await queue_of(alice)] == [first["ID"], second["ID"], third["ID"]]
    assert (await alice.delete(f"/machine/{MAC}/boot/queue/99999")).code == 404
    assert (await alice.delete("/machine/52:54:00:00:00:99/boot/queue/1")).code == 404

    r = await alice.delete(f"/machine/{MAC}/boot/queue/{second['ID']}")
    assert r.code == 200, r.text
    assert r.json()["State"] == "cancelled"
    assert r.json()["FinishedAt"] is not None
    r = await mod.delete(f"/machine/{MAC}/boot/queue/{third['ID']}")
    assert r.code == 200, r.text
    # Cancelled is final.
    assert (await alice.delete(f"/machine/{MAC}/boot/queue/{second['ID']}")).code == 409
    assert [w["ID"] for w in await queue_of(alice)] == [first["ID"]]

    cancels = [e for e in await machine_events(alice) if e["Action"] == "queue.cancel"]
    assert [(e["Actor"], e["Detail"]) for e in cancels] == [
        ("alice", f"work={second['ID']}"),
        ("mod", f"work={third['ID']}"),
    ]


@pytest_twisted.ensureDeferred
async def test_cancelling_the_last_entry_stops_netbooting(server):
    alice, _, work = await queued_image(server)
    assert (await server.anonymous.get(f"/v1/boot/{MAC}")).code == 200

    assert (await alice.delete(f"/machine/{MAC}/boot/queue/{work['ID']}")).code == 200
    r = await server.anonymous.get(f"/v1/boot/{MAC}")
    assert r.code == 404, r.text
    assert "\nexit\n" in (await server.anonymous.get(f"/ipxe/{MAC}")).text
    assert await queue_of(server.admin) == []


@pytest_twisted.ensureDeferred
async def test_queued_work_is_a_snapshot_of_its_setup(server):
    await add_machine(server)
    alice = await server.user("alice")
    a, b = await new_image(alice, "a"), await new_image(alice, "b")
    setup = await new_setup(alice, "alice", [{"UUID": a, "Update": True}])
    base = f"/user/alice/image_setup/{setup['UUID']}"
    work = (await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})).json()

    assert (await alice.put(base, {"Name": "changed", "Images": [{"UUID": b}]})).code == 200
    assert (await alice.post(f"{base}/images", {"UUID": a, "Update": False})).code == 200
    [queued] = await queue_of(alice)
    assert queued["Name"] == setup["Name"]
    assert queued["Images"] == [{"UUID": a, "Version": 0, "Update": True, "DiskHints": None}]

    # Even deleting the setup leaves the queued work as it was.
    assert (await alice.delete(base)).code == 200
    [queued] = await queue_of(alice)
    assert queued["ID"] == work["ID"]
    assert queued["Images"] == [{"UUID": a, "Version": 0, "Update": True, "DiskHints": None}]
    machine = await machine_client(server)
    taken = (await machine.get(f"/machine/{MAC}/boot")).json()
    # BootInform lists ImageFrozen entries, the machine image last.
    assert [i["Image"]["UUID"] for i in taken["Images"] if i["Image"]["Type"] != "machine"] == [a]


@pytest_twisted.ensureDeferred
async def test_update_false_switches_capture_off_for_the_run(server):
    await add_machine(server)
    alice = await server.user("alice")
    disk = await new_image(alice)
    setup = await new_setup(alice, "alice", [{"UUID": disk, "Update": True}])
    r = await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"], "Update": False})
    assert r.json()["Update"] is False
    assert r.json()["Images"] == [{"UUID": disk, "Version": 0, "Update": False, "DiskHints": None}]


@pytest_twisted.ensureDeferred
async def test_versions_held_by_queued_work_cannot_be_deleted_or_replaced(server):
    alice, disk, work = await queued_image(server)
    before = (await alice.get(f"/image/{disk}")).json()

    r = await alice.delete(f"/image/{disk}")
    assert r.code == 409, r.text
    r = await replace_latest(alice, disk, b"overwrite" * 100)
    assert r.code == 409, r.text
    assert (await alice.get(f"/image/{disk}")).json() == before
    r = await alice.get(f"/image/{disk}/0")
    assert r.code == 200 and len(r.body) == MIB and set(r.body) == {0}

    # A new version does not touch the held one.
    r = await alice.request("POST", f"/image/{disk}", data=b"v1" * 100, headers=OCTETS)
    assert r.code == 200, r.text
    assert r.text.strip() == "Successfully uploaded image: 1"

    assert (await alice.delete(f"/machine/{MAC}/boot/queue/{work['ID']}")).code == 200
    r = await replace_latest(alice, disk, b"v1 again" * 100)
    assert r.code == 200, r.text
    assert r.text.strip() == "Successfully uploaded image: 1"
    r = await alice.delete(f"/image/{disk}")
    assert r.code == 200, r.text
    assert (await alice.get(f"/image/{disk}")).code == 404

    image_events = (await server.admin.get(f"/events?target_type=image&target={disk}")).json()
    actions = [e["Action"] for e in reversed(image_events)]
    assert actions == ["image.create", "image.version", "image.version.replace", "image.delete"]


@pytest_twisted.ensureDeferred
async def test_moderator_queues_for_the_setups_owner(server):
    await add_machine(server)
    alice = await server.user("alice")
    mod = await server.user("mod", "moderator")
    disk = await new_image(alice)
    setup = await new_setup(alice, "alice", [{"UUID": disk}])

    r = await mod.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})
    assert r.code == 200, r.text
    work = r.json()
    # The work is alice's: she sees it and may cancel it; the log says who.
    assert work["Username"] == "alice"
    assert [w["ID"] for w in await queue_of(alice)] == [work["ID"]]
    assert (await alice.delete(f"/machine/{MAC}/boot/queue/{work['ID']}")).code == 200
    [added] = [e for e in await machine_events(alice) if e["Action"] == "queue.add"]
    assert added["Actor"] == "mod"
