"""The lease keeper (pxed/leasekeeper.py) in a running pxed: the warning
before a lease's end, the end itself (the holder's queued work cancelled,
the machine re-imaged with its setup, the erase policy cleaning the
holder's disks), other users' work held off a running lease, and a lease
that ended while pxed was down; on both databases."""

from __future__ import annotations

import datetime as dt

import pytest_twisted
from twisted.internet import reactor, task

from tests.helpers import (
    MAC,
    add_machine,
    enqueue,
    eventually,
    machine_client,
    machine_events,
    new_image,
    new_setup,
)

FAST = {"lease_check_interval": 0.1}


def soon(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


async def actions(server) -> list[str]:
    return [e["Action"] for e in await machine_events(server.admin)]


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_holder_is_warned_once_then_the_lease_ends_and_the_machine_is_reimaged(
    start_server,
):
    server = await start_server(**FAST)
    await add_machine(server, name="node1")
    base = await new_setup(server.admin, "admin", [{"UUID": await new_image(server.admin)}])
    r = await server.admin.put(
        f"/machine/{MAC}", {"LeaseEnd": "reimage", "LeaseSetupUUID": base["UUID"]}
    )
    assert r.code == 200 and r.json()["LeaseEnd"] == "reimage", r.text
    alice = await server.user("alice")
    [lease] = (await alice.post("/leases", {"Machines": ["node1"], "End": soon(3)})).json()
    # Alice deploys and her work is done; more of hers is still queued at the end.
    await enqueue(alice, [{"UUID": await new_image(alice)}])
    agent = await machine_client(server)
    assert (await agent.get(f"/machine/{MAC}/boot")).code == 200
    assert (await agent.post(f"/machine/{MAC}/boot/complete", {"Success": True})).code == 200
    left = await enqueue(alice, [{"UUID": await new_image(alice, "more")}])

    async def ended() -> bool:
        return "lease.end" in await actions(server)

    await eventually(ended, timeout=15)

    seen = await actions(server)
    assert seen.count("lease.ending") == 1 and seen.count("lease.end") == 1
    assert seen.index("lease.ending") < seen.index("lease.end")
    shown = (await server.admin.get(f"/lease/{lease['ID']}")).json()
    assert shown["State"] == "ended" and shown["EndedAt"] is not None
    events = await machine_events(server.admin)
    cancels = [e for e in events if e["Action"] == "queue.cancel"]
    assert [(e["Actor"], e["Detail"]) for e in cancels] == [("pxed", f"work={left['ID']}")]
    queue = (await server.admin.get(f"/machine/{MAC}/boot/queue")).json()
    [reimage] = queue
    assert (reimage["Username"], reimage["SetupUUID"]) == ("admin", base["UUID"])
    # The re-image is another user's work than alice's: her disks are erased.
    work = (await (await machine_client(server)).get(f"/machine/{MAC}/boot")).json()
    assert work["ID"] == reimage["ID"] and work["Erase"]["Policy"] == "metadata"
    assert "another user's" in work["Erase"]["Reason"]
    # Nothing happens twice on later looks.
    await sleep(0.5)
    assert (await actions(server)).count("lease.end") == 1


@pytest_twisted.ensureDeferred
async def test_other_users_queued_work_is_cancelled_when_a_lease_begins(start_server):
    server = await start_server(**FAST)
    await add_machine(server, name="node1")
    alice, bob = await server.user("alice"), await server.user("bob")
    bobs = await enqueue(bob, [{"UUID": await new_image(bob)}], user="bob")
    staff = await enqueue(server.admin, [{"UUID": await new_image(server.admin)}], user="admin")
    r = await alice.post("/leases", {"Machines": ["node1"], "Start": soon(1), "Hours": 1})
    assert r.code == 201, r.text

    async def cancelled() -> bool:
        queue = (await server.admin.get(f"/machine/{MAC}/boot/queue")).json()
        return [w["ID"] for w in queue] == [staff["ID"]]

    await eventually(cancelled, timeout=10)
    events = [e for e in await machine_events(server.admin) if e["Action"] == "queue.cancel"]
    assert [(e["Actor"], e["Detail"]) for e in events] == [("pxed", f"work={bobs['ID']}")]


@pytest_twisted.ensureDeferred
async def test_a_lease_that_ended_while_pxed_was_down_is_ended_at_start(start_server):
    first = await start_server(lease_check_interval=3600)
    await add_machine(first, name="node1")
    alice = await first.user("alice")
    [lease] = (await alice.post("/leases", {"Machines": ["node1"], "End": soon(1)})).json()
    data_dir = first.config.data_dir
    await first.pxed.service.stopService()
    await sleep(1.5)

    again = await start_server(data_dir=str(data_dir), lease_check_interval=3600)

    async def ended() -> bool:
        return (await again.admin.get(f"/lease/{lease['ID']}")).json()["State"] == "ended"

    await eventually(ended, timeout=10)
    assert (await actions(again)).count("lease.end") == 1
