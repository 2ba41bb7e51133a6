"""pxectl machines, queue, events, logs."""

from __future__ import annotations

import json

import pytest_twisted

from tests.cli.conftest import token_of
from tests.helpers import MAC, add_machine, eventually, machine_client, new_image, new_setup

OTHER = "52:54:00:aa:bb:02"


@pytest_twisted.ensureDeferred
async def test_machines_add_list_show_edit_delete(server, pxectl):
    added = (await pxectl.ok("machines", "add", "node1", MAC, "--arch", "x86_64", "--json")).json()
    assert (added["Name"], added["MacAddresses"]) == ("node1", [{"Mac": MAC}])
    assert "Added node2" in (await pxectl.ok("machines", "add", "node2", OTHER, "--unmanaged")).out

    listed = (await pxectl.ok("machines", "list", "--json")).json()
    assert sorted((m["Name"], m["Managed"]) for m in listed) == [("node1", True), ("node2", False)]
    table = (await pxectl.ok("machines", "list")).out.splitlines()
    assert table[0].split() == ["MAC", "NAME", "ARCH", "MANAGED", "STATE", "PROGRESS"]
    assert any(line.split()[:2] == [OTHER, "node2"] for line in table)

    shown = (await pxectl.ok("machines", "show", MAC.upper(), "--json")).json()
    assert shown["Name"] == "node1" and shown["Progress"] is None
    assert "Name:" in (await pxectl.ok("machines", "show", MAC)).out

    r = await pxectl.ok("machines", "edit", OTHER, "--name", "n2", "--managed", "--json")
    edited = r.json()
    assert (edited["Name"], edited["Managed"]) == ("n2", True)
    assert (await pxectl("machines", "edit", OTHER)).code == 2

    assert "Deleted" in (await pxectl.ok("machines", "delete", OTHER)).out
    assert (await pxectl("machines", "show", OTHER)).code == 4
    r = await pxectl("machines", "add", "dup", MAC)
    assert r.code == 1 and r.err.startswith("Error: 409")


@pytest_twisted.ensureDeferred
async def test_queue_events_and_logs(server, pxectl):
    await pxectl.ok("machines", "add", "node1", MAC)
    image = await new_image(server.admin)
    setup = await new_setup(server.admin, "admin", [{"UUID": image, "Version": 0}])
    work = (await pxectl.ok("deploy", MAC, setup["UUID"], "--json")).json()
    assert work["State"] == "queued"

    queued = (await pxectl.ok("queue", MAC, "--json")).json()
    assert [w["ID"] for w in queued] == [work["ID"]]
    assert str(work["ID"]) in (await pxectl.ok("queue", MAC)).out

    mgmtos = await machine_client(server)
    r = await mgmtos.post("/log", {"Message": "writing the disk", "Level": "info"})
    assert r.code in (200, 201), r.text
    lines = (await pxectl.ok("logs", MAC, "--json")).json()
    assert [line["Message"] for line in lines] == ["writing the disk"]
    assert "writing the disk" in (await pxectl.ok("logs", MAC)).out

    actions = [e["Action"] for e in (await pxectl.ok("events", MAC, "--json")).json()]
    assert "queue.add" in actions and "work.netboot" in actions
    assert "queue.add" in (await pxectl.ok("events", MAC)).out

    again = (await pxectl.ok("deploy", MAC, setup["UUID"], "--json")).json()
    r = await pxectl.ok("queue", MAC, "--cancel", str(again["ID"]), "--json")
    assert (r.json()["ID"], r.json()["State"]) == (again["ID"], "cancelled")
    r = await pxectl("queue", MAC, "--cancel", str(again["ID"]))
    assert r.code == 1 and r.err.startswith("Error: 409 Conflict: queue entry ")
    assert "cancelled" in (await pxectl.ok("queue", MAC, "--cancel", str(work["ID"]))).out


@pytest_twisted.ensureDeferred
async def test_the_audit_log_is_for_admins(server, pxectl):
    await add_machine(server)
    audit = (await pxectl.ok("events", "--json", "--limit", "5")).json()
    assert 1 <= len(audit) <= 5 and audit[0]["Action"] == "machine.create"
    alice = await server.user("alice")
    refused = await pxectl("events", PXED_TOKEN=token_of(alice))
    assert refused.code == 3 and "admins only" in refused.err
    assert (await pxectl("events", "--until", "queue.done")).code == 2


@pytest_twisted.ensureDeferred
async def test_events_follow_until_an_action(server, pxectl):
    await add_machine(server)
    image = await new_image(server.admin)
    setup = await new_setup(server.admin, "admin", [{"UUID": image}])
    following = pxectl("events", MAC, "-f", "--until", "queue.done", "--json")
    await eventually(lambda: server.pxed.feed.streams == 1, timeout=30)
    r = await server.admin.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})
    assert r.code == 200, r.text
    mgmtos = await machine_client(server)
    assert (await mgmtos.get(f"/machine/{MAC}/boot")).code == 200
    assert (await mgmtos.post(f"/machine/{MAC}/boot/complete", {"Success": True})).code == 200
    done = await following  # ended by itself, at queue.done
    assert done.code == 0, done
    actions = [json.loads(line)["Action"] for line in done.out.splitlines()]
    assert actions[0] == "queue.add" and actions[-1] == "queue.done"
    assert "queue.start" in actions


@pytest_twisted.ensureDeferred
async def test_erase_policies_and_an_erase_on_demand(server, pxectl):
    added = await pxectl.ok("machines", "add", "node1", MAC, "--erase", "none", "--json")
    assert added.json()["Erase"] == "none"
    edited = await pxectl.ok("machines", "edit", MAC, "--erase", "full", "--json")
    assert edited.json()["Erase"] == "full"
    assert "Erase:" in (await pxectl.ok("machines", "show", MAC)).out
    r = await pxectl("machines", "edit", MAC, "--erase", "shred")
    assert r.code == 2 and "shred" in r.err

    image = await new_image(server.admin)
    setup = await new_setup(server.admin, "admin", [{"UUID": image, "Version": 0}])
    work = await pxectl.ok(
        "deploy", MAC, setup["UUID"], "--erase", "discard", "--user-data", "-", "--json",
        input="#cloud-config\nruncmd: [true]\n",
    )  # fmt: skip
    assert (work.json()["EraseAsked"], work.json()["HasUserData"]) == ("discard", True)

    erasing = await pxectl.ok("machines", "erase", MAC, "--policy", "metadata")
    assert erasing.out.startswith("Queued work ") and "erase (metadata)" in erasing.out
    queued = (await server.admin.get(f"/machine/{MAC}/boot/queue")).json()
    assert [w["EraseAsked"] for w in queued] == ["discard", "metadata"]
    alice = await server.user("alice")
    r = await pxectl("machines", "erase", MAC, PXED_TOKEN=token_of(alice))
    assert r.code == 3 and r.err.startswith("Error: 403 Forbidden"), r.err
