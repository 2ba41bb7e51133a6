"""The server's half of cleaning between users (pxed/erase.py): whose data
pxed thinks a machine's disks hold, what BootInform tells the management
OS to erase, and the erase routes' refusals."""

from __future__ import annotations

import pytest_twisted

from tests.helpers import (
    MAC,
    add_machine,
    enqueue,
    machine_client,
    machine_events,
    new_image,
)


async def take(server) -> dict:
    """BootInform for the machine's next work, as its management OS asks."""
    agent = await machine_client(server)
    r = await agent.get(f"/machine/{MAC}/boot")
    assert r.code == 200, r.text
    return r.json()


async def finish(server, success: bool = True) -> None:
    agent = await machine_client(server)
    r = await agent.post(f"/machine/{MAC}/boot/complete", {"Success": success})
    assert r.code == 200, r.text


async def machine(server) -> dict:
    return (await server.admin.get(f"/machine/{MAC}")).json()


@pytest_twisted.ensureDeferred
async def test_a_new_machine_is_erased_before_its_first_work(server):
    made = await add_machine(server)
    assert (made["Erase"], made["LastUser"]) == ("metadata", None)
    alice = await server.user("alice")
    queued = await enqueue(alice, [{"UUID": await new_image(alice), "Update": True}])
    assert (queued["EraseAsked"], queued["Erase"]) == (None, None), "decided when taken"

    work = await take(server)

    assert work["Erase"]["Policy"] == "metadata"
    assert "no user's data is on record" in work["Erase"]["Reason"]
    # A machine's first work may capture what it came with.
    assert work["Images"][0]["Update"] is True
    [entry] = (await alice.get(f"/machine/{MAC}/boot/queue")).json()
    assert (entry["Erase"], entry["EraseReason"]) == ("metadata", work["Erase"]["Reason"])
    decided = [e for e in await machine_events(alice) if e["Action"] == "machine.erase"]
    assert len(decided) == 1 and "erase=metadata" in decided[0]["Detail"]


@pytest_twisted.ensureDeferred
async def test_the_last_users_next_work_is_not_erased_and_another_users_captures_nothing(
    server,
):
    await add_machine(server)
    alice, bob = await server.user("alice"), await server.user("bob")
    await enqueue(alice, [{"UUID": await new_image(alice)}])
    await take(server)
    await finish(server)
    assert (await machine(server))["LastUser"] == "alice"

    await enqueue(alice, [{"UUID": await new_image(alice, "again"), "Update": True}])
    again = await take(server)
    assert again["Erase"] is None and again["Images"][0]["Update"] is True
    await finish(server)

    await enqueue(bob, [{"UUID": await new_image(bob), "Update": True}], user="bob")
    bobs = await take(server)
    assert bobs["Erase"]["Policy"] == "metadata"
    assert "another user's" in bobs["Erase"]["Reason"]
    # Bob's Update would store alice's disk as his image's next version
    # (the machine's own record, Type machine, goes back as after every run).
    assert [(i["Image"]["Type"], i["Update"]) for i in bobs["Images"]] == [
        ("base", False),
        ("machine", True),
    ]
    assert bobs["Update"] is False


@pytest_twisted.ensureDeferred
async def test_a_failed_work_of_another_user_forgets_whose_disks_they_are(server):
    await add_machine(server)
    alice, bob = await server.user("alice"), await server.user("bob")
    await enqueue(alice, [{"UUID": await new_image(alice)}])
    await take(server)
    await finish(server)
    await enqueue(bob, [{"UUID": await new_image(bob)}], user="bob")
    await take(server)
    await finish(server, success=False)

    # Part of bob's image may be on the disks: alice's next work erases too.
    assert (await machine(server))["LastUser"] is None
    await enqueue(alice, [{"UUID": await new_image(alice, "back")}])
    assert (await take(server))["Erase"]["Policy"] == "metadata"


@pytest_twisted.ensureDeferred
async def test_a_machines_policy_and_a_works_own_ask(server):
    await add_machine(server, erase="none")
    alice, bob = await server.user("alice"), await server.user("bob")
    await enqueue(alice, [{"UUID": await new_image(alice)}])
    assert (await take(server))["Erase"] is None, "policy none: nothing erased"
    await finish(server)
    r = await server.admin.put(f"/machine/{MAC}", {"Erase": "full"})
    assert r.code == 200 and r.json()["Erase"] == "full", r.text

    setup = (await enqueue(bob, [{"UUID": await new_image(bob)}], user="bob"))["SetupUUID"]
    assert (await take(server))["Erase"]["Policy"] == "full"
    await finish(server)

    # The same user asks for an erase when queueing.
    r = await bob.post(f"/machine/{MAC}/boot", {"SetupUUID": setup, "Erase": "discard"})
    assert r.code == 200 and r.json()["EraseAsked"] == "discard", r.text
    work = await take(server)
    assert work["Erase"] == {"Policy": "discard", "Reason": "asked for when the work was queued"}


@pytest_twisted.ensureDeferred
async def test_an_erase_on_demand_is_work_without_images(server):
    await add_machine(server)
    r = await server.admin.post(f"/machine/{MAC}/erase", {})
    assert r.code == 201, r.text
    assert r.json()["EraseAsked"] == "metadata" and r.json()["Setup"]["Images"] == []

    work = await take(server)

    assert [i["Image"]["Type"] for i in work["Images"]] == ["machine"]
    assert work["Erase"]["Policy"] == "metadata"


@pytest_twisted.ensureDeferred
async def test_bad_erase_input_is_refused_and_changes_nothing(server):
    await add_machine(server)
    alice = await server.user("alice")
    setup_owner = await new_image(alice)
    for method, path, body in [
        ("PUT", f"/machine/{MAC}", {"Erase": "shred"}),
        ("PUT", f"/machine/{MAC}", {"Erase": 1}),
        ("POST", f"/machine/{MAC}/erase", {"Policy": "none"}),
        ("POST", f"/machine/{MAC}/erase", {"Policy": "everything"}),
        ("POST", f"/machine/{MAC}/boot", {"ImageUUID": setup_owner, "Erase": "none"}),
    ]:
        client = alice if path.endswith("/boot") else server.admin
        r = await client.request(method, path, json_body=body)
        assert r.code == 400, (method, path, body, r.text)
        assert "Erase" in r.json()["error"] or "Policy" in r.json()["error"], r.text
    r = await alice.post(f"/machine/{MAC}/erase", {"Policy": "full"})
    assert r.code == 403, r.text
    assert r.json()["error"] and "Traceback" not in r.text

    assert (await machine(server))["Erase"] == "metadata"
    assert (await server.admin.get(f"/machine/{MAC}/boot/queue")).json() == []


@pytest_twisted.ensureDeferred
async def test_a_deleted_last_user_is_forgotten_and_the_next_work_erases(server):
    await add_machine(server)
    alice = await server.user("alice")
    await enqueue(alice, [{"UUID": await new_image(alice)}])
    await take(server)
    await finish(server)
    assert (await machine(server))["LastUser"] == "alice"

    assert (await server.admin.delete("/user/alice")).code in (200, 204)

    assert (await machine(server))["LastUser"] is None
    await enqueue(server.admin, [{"UUID": await new_image(server.admin)}], user="admin")
    assert "no user's data is on record" in (await take(server))["Erase"]["Reason"]
