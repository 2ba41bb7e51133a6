"""Leases (pxed/web/leases.py, pxed/db/leases.py): reserving machines for a
time window, the calendar, extending and releasing, the per-role limits,
and who may use a leased machine; on both databases."""

from __future__ import annotations

import datetime as dt

import pytest_twisted
from twisted.internet import defer

from tests.helpers import MAC, add_machine, new_image, new_setup
from tests.web.test_hardware import inventory

OTHER = "52:54:00:00:00:0c"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def at(hours: float) -> str:
    return (NOW + dt.timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


async def leases(server, query: str = "") -> list[dict]:
    r = await server.admin.get(f"/leases{query}")
    assert r.code == 200, r.text
    return r.json()


@pytest_twisted.ensureDeferred
async def test_a_reservation_holds_its_machines_and_an_overlap_is_refused(server):
    await add_machine(server, name="node1")
    await add_machine(server, mac=OTHER, name="node2")
    alice, bob = await server.user("alice"), await server.user("bob")

    r = await alice.post("/leases", {"Machines": ["node1", OTHER], "Start": at(1), "End": at(3)})

    assert r.code == 201, r.text
    made = r.json()
    assert [(x["Machine"], x["User"], x["State"]) for x in made] == [
        ("node1", "alice", "upcoming"),
        ("node2", "alice", "upcoming"),
    ]
    assert made[0]["Reservation"] == made[1]["Reservation"]
    # Bob's hours overlap on node2: nothing of his reservation is made.
    r = await bob.post("/leases", {"Machines": [OTHER], "Start": at(2), "Hours": 4})
    assert r.code == 409, r.text
    assert "'node2' is leased to alice" in r.json()["error"]
    # Right after alice's ends is free.
    r = await bob.post("/leases", {"Machines": ["node2"], "Start": at(3), "End": at(5)})
    assert r.code == 201, r.text
    calendar = await leases(server, f"?machine=node2&until={at(10)}")
    assert [(x["User"], x["Start"], x["End"]) for x in calendar] == [
        ("alice", at(1), at(3)),
        ("bob", at(3), at(5)),
    ]
    assert [x["User"] for x in await leases(server, "?user=bob")] == ["bob"]
    events = (await server.admin.get(f"/machine/{OTHER}/events")).json()
    assert [e["Action"] for e in events].count("lease.reserve") == 2


@pytest_twisted.ensureDeferred
async def test_of_two_users_asking_for_the_same_hours_at_once_one_gets_them(server):
    for i in range(3):
        await add_machine(server, mac=f"52:54:00:00:01:{i:02x}", name=f"n{i}")
    users = [await server.user(name) for name in ("alice", "bob", "carol", "dave")]
    body = {"Machines": ["n2", "n1", "n0"], "Start": at(1), "Hours": 2}

    answers = await defer.gatherResults(
        [defer.ensureDeferred(u.post("/leases", body)) for u in users]
    )

    codes = sorted(r.code for r in answers)
    assert codes == [201, 409, 409, 409], [r.text for r in answers]
    held = await leases(server)
    assert len(held) == 3 and len({x["User"] for x in held}) == 1


@pytest_twisted.ensureDeferred
async def test_a_running_lease_keeps_other_users_off_its_machine(server):
    await add_machine(server, name="node1")
    alice, bob = await server.user("alice"), await server.user("bob")
    bobs = await new_setup(bob, "bob", [{"UUID": await new_image(bob)}])
    # Bob's work from before the lease (the keeper cancels it at its next
    # look) would let him use the machine's power: not while alice holds it.
    assert (await bob.post(f"/machine/{MAC}/boot", {"SetupUUID": bobs["UUID"]})).code == 200
    assert (await bob.get(f"/machine/{MAC}/power")).code == 409, "no driver: served"
    r = await alice.post("/leases", {"Machines": ["node1"], "Hours": 2})
    assert r.code == 201 and r.json()[0]["State"] == "active", r.text
    for method, body in (("GET", None), ("POST", {"Action": "on"})):
        r = await bob.request(method, f"/machine/{MAC}/power", json_body=body)
        assert r.code == 403 and "leased to alice" in r.text, (method, r.text)
    alices = await new_setup(alice, "alice", [{"UUID": await new_image(alice)}])

    r = await bob.post(f"/machine/{MAC}/boot", {"SetupUUID": bobs["UUID"]})
    assert r.code == 403, r.text
    assert "'node1' is leased to alice until" in r.json()["error"]
    assert (await bob.get(f"/machine/{MAC}/logs")).code == 403
    queued = (await server.admin.get(f"/machine/{MAC}/boot/queue")).json()
    assert [w["Username"] for w in queued] == ["bob"], "only his from before"
    assert (await bob.delete(f"/machine/{MAC}/boot/queue/{queued[0]['ID']}")).code == 200

    assert (await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": alices["UUID"]})).code == 200
    assert (await alice.get(f"/machine/{MAC}/logs")).code == 200
    # Staff are not held off (they run the lab).
    assert (await server.admin.get(f"/machine/{MAC}/logs")).code == 200

    [lease] = await leases(server)
    r = await bob.delete(f"/lease/{lease['ID']}")
    assert r.code == 403, r.text
    r = await alice.delete(f"/lease/{lease['ID']}")
    assert r.code == 200 and r.json()["State"] == "ended", r.text
    r = await bob.post(f"/machine/{MAC}/boot", {"SetupUUID": bobs["UUID"]})
    assert r.code == 200, r.text


@pytest_twisted.ensureDeferred
async def test_a_lease_is_extended_unless_another_follows(server):
    await add_machine(server, name="node1")
    alice, bob = await server.user("alice"), await server.user("bob")
    [mine] = (await alice.post("/leases", {"Machines": ["node1"], "End": at(2)})).json()
    r = await bob.post("/leases", {"Machines": ["node1"], "Start": at(6), "End": at(8)})
    assert r.code == 201, r.text

    r = await alice.put(f"/lease/{mine['ID']}", {"End": at(5)})
    assert r.code == 200 and r.json()["End"] == at(5), r.text
    r = await alice.put(f"/lease/{mine['ID']}", {"End": at(7)})
    assert r.code == 409 and "leased to bob" in r.json()["error"], r.text
    assert (await server.admin.get(f"/lease/{mine['ID']}")).json()["End"] == at(5)
    r = await bob.put(f"/lease/{mine['ID']}", {"End": at(6)})
    assert r.code == 403, r.text


@pytest_twisted.ensureDeferred
async def test_each_role_is_held_to_its_limits(start_server):
    server = await start_server(lease_user_machines=2, lease_user_hours=10, lease_user_ahead_days=1)
    for i in range(3):
        await add_machine(server, mac=f"52:54:00:00:02:{i:02x}", name=f"n{i}")
    alice = await server.user("alice")
    await server.user("mod", role="moderator")

    for body, reason in [
        ({"Machines": ["n0", "n1", "n2"], "Hours": 1}, "at most 2 machine(s) at once"),
        ({"Machines": ["n0"], "Hours": 11}, "at most 10 hours"),
        ({"Machines": ["n0"], "Start": at(48), "Hours": 1}, "at most 1 days ahead"),
    ]:
        r = await alice.post("/leases", body)
        assert r.code == 403 and reason in r.json()["error"], (body, r.text)
    assert (await alice.post("/leases", {"Machines": ["n0", "n1"], "Hours": 10})).code == 201
    r = await alice.post("/leases", {"Machines": ["n2"], "Start": at(5), "Hours": 1})
    assert r.code == 403, "a third machine in a window where she holds two"
    # An admin reserving for alice is held to alice's limits; for himself to none.
    r = await server.admin.post("/leases", {"Machines": ["n2"], "Hours": 1, "User": "alice"})
    assert r.code == 403, r.text
    r = await server.admin.post("/leases", {"Machines": ["n2"], "Hours": 500})
    assert r.code == 201, r.text
    r = await alice.post(
        "/leases", {"Machines": ["n2"], "Start": at(600), "Hours": 1, "User": "mod"}
    )
    assert r.code == 403 and "moderators and admins" in r.json()["error"], r.text


@pytest_twisted.ensureDeferred
async def test_bad_reservations_are_refused_and_change_nothing(server):
    await add_machine(server, name="node1")
    alice = await server.user("alice")
    for body, code in [
        ({}, 400),
        ({"Machines": []}, 400),
        ({"Machines": "node1", "Hours": 1}, 400),
        ({"Machines": ["node1"]}, 400),
        ({"Machines": ["node1"], "Hours": 1, "End": at(1)}, 400),
        ({"Machines": ["node1"], "Hours": -1}, 400),
        ({"Machines": ["node1"], "Hours": True}, 400),
        ({"Machines": ["node1"], "Start": "tomorrow", "Hours": 1}, 400),
        ({"Machines": ["node1"], "Start": at(3), "End": at(2)}, 400),
        ({"Machines": ["node1"], "Start": at(-3), "End": at(-2)}, 400),
        ({"Machines": ["node1", "node1"], "Hours": 1}, 400),
        ({"Machines": ["node1", MAC], "Hours": 1}, 400),
        ({"Machines": ["nope"], "Hours": 1}, 404),
        ({"Machines": [1], "Hours": 1}, 400),
    ]:
        r = await alice.post("/leases", body)
        assert r.code == code, (body, r.code, r.text)
        assert r.json()["error"] and "Traceback" not in r.text
    assert (await server.anonymous.post("/leases", {"Machines": ["node1"], "Hours": 1})).code == 401
    assert (await alice.get("/leases?since=soon")).code == 400
    assert (await alice.get("/lease/999")).code == 404
    assert await leases(server, f"?since={at(-100)}") == []


@pytest_twisted.ensureDeferred
async def test_what_a_machine_does_when_its_lease_ends(server):
    made = await add_machine(server, name="node1")
    assert (made["LeaseEnd"], made["LeaseSetupUUID"]) == ("poweroff", None)
    for body in (
        {"LeaseEnd": "reimage"},
        {"LeaseEnd": "explode"},
        {"LeaseSetupUUID": "0" * 32},
    ):
        r = await server.admin.put(f"/machine/{MAC}", body)
        assert r.code == 400, (body, r.text)
    setup = await new_setup(server.admin, "admin", [{"UUID": await new_image(server.admin)}])
    body = {"LeaseEnd": "reimage", "LeaseSetupUUID": setup["UUID"]}
    assert (await server.admin.put(f"/machine/{MAC}", body)).code == 200

    # The setup deleted, the machine powers off at a lease's end instead.
    assert (await server.admin.delete(f"/user/admin/image_setup/{setup['UUID']}")).code == 200
    machine = (await server.admin.get(f"/machine/{MAC}")).json()
    assert (machine["LeaseEnd"], machine["LeaseSetupUUID"]) == ("poweroff", None)


@pytest_twisted.ensureDeferred
async def test_machines_are_reserved_by_their_hardware(server):
    gib = 1 << 30
    for i, memory in enumerate((2, 64, 64, 128)):
        mac = f"52:54:00:00:06:{i:02x}"
        await add_machine(server, mac, f"n{i}")
        body = inventory(Memory=memory * gib)
        r = await server.admin.put(f"/machine/{mac}/hardware", body)
        assert r.code == 200, r.text
    alice, bob = await server.user("alice"), await server.user("bob")
    big = {"Filter": {"min_memory": "64G"}, "Count": 2, "Hours": 2}

    r = await alice.post("/leases", big)

    assert r.code == 201, r.text
    assert [x["Machine"] for x in r.json()] == ["n1", "n2"], "the first matching, by name"
    r = await bob.post("/leases", big)
    assert r.code == 409 and "1 of the 3 machine(s) matching the filter are free" in r.text
    r = await bob.post("/leases", {**big, "Count": 1})
    assert r.code == 201 and r.json()[0]["Machine"] == "n3", r.text
    for body in (
        {"Filter": {"min_memory": "lots"}, "Hours": 1},
        {"Filter": {"colour": "red"}, "Hours": 1},
        {"Filter": {"min_memory": "1G"}, "Count": 0, "Hours": 1},
        {"Filter": {}, "Machines": ["n0"], "Hours": 1},
    ):
        r = await bob.post("/leases", body)
        assert r.code == 400, (body, r.text)
    r = await bob.post("/leases", {"Filter": {"arch": "arm64"}, "Hours": 1})
    assert r.code == 409 and "no machine matches" in r.text
