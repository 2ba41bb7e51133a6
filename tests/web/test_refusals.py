"""What the database layer refuses reaches the client with the status and
message it always had: the db modules raise domain errors
(pxed/db/errors.py) and pxed.web.router answers each kind with one status.
One request for each refusal of theirs a client can reach, its answer
compared byte for byte."""

from __future__ import annotations

import json

import pytest_twisted

from tests.helpers import MAC, add_machine, machine_client, new_image, new_setup, upload_version

MAC2 = "52:54:00:00:00:02"
MAC3 = "52:54:00:00:00:03"
NIL = "00000000-0000-0000-0000-000000000000"


def refused(r, status: int, message: str) -> None:
    assert (r.code, r.body) == (status, json.dumps({"error": message}).encode() + b"\n"), (
        r.code,
        r.body,
    )


@pytest_twisted.ensureDeferred
async def test_users_and_tokens(server):
    admin = server.admin
    await server.user("alice")
    refused(await admin.get("/user/nobody"), 404, "no user 'nobody'")
    refused(
        await admin.post("/user", {"Username": "alice", "Role": "user"}),
        409,
        "user 'alice' already exists",
    )
    refused(
        await admin.post("/user", {"Username": "-x", "Role": "user"}),
        400,
        "Username: 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
    )
    refused(
        await admin.put("/user/alice", {"Role": "root"}),
        400,
        "Role: must be one of user, moderator, admin",
    )
    refused(
        await admin.put("/user/admin", {"Role": "user"}), 409, "the last admin cannot be demoted"
    )
    refused(await admin.request("DELETE", "/user/admin"), 409, "the last admin cannot be removed")
    refused(
        await admin.request("DELETE", "/user/admin/tokens/999"),
        404,
        "no token 999 for user 'admin'",
    )
    refused(await admin.post("/user/nobody/tokens", {"Name": "t"}), 404, "no user 'nobody'")


@pytest_twisted.ensureDeferred
async def test_machines_setups_images_and_queue(server):
    admin = server.admin
    alice = await server.user("alice")
    mine = await new_image(alice, "mine")
    await upload_version(alice, mine, b"v1")
    theirs = await new_image(admin, "theirs")
    await add_machine(server, MAC, "m1")
    refused(
        await admin.post("/machine", {"Name": "m1", "MacAddresses": [{"Mac": MAC2}]}),
        409,
        "a machine named 'm1' already exists",
    )
    refused(
        await admin.post("/machine", {"Name": "m2", "MacAddresses": [{"Mac": MAC}]}),
        409,
        f"MAC {MAC} already belongs to machine 'm1'",
    )
    for r in (
        await admin.get(f"/machine/{MAC2}"),
        await admin.put(f"/machine/{MAC2}", {"Name": "m2"}),
        await admin.request("DELETE", f"/machine/{MAC2}"),
    ):
        refused(r, 404, f"no machine with MAC {MAC2}")
    await add_machine(server, MAC3, "m3")
    refused(
        await admin.put("/machine", {"Name": "m", "MacAddresses": [{"Mac": MAC}, {"Mac": MAC3}]}),
        409,
        "the MAC addresses belong to more than one machine",
    )

    setups = "/user/alice/image_setup"
    refused(await alice.get(f"{setups}/{NIL}"), 404, f"user 'alice' has no image setup {NIL}")
    for images, status, message in (
        ([{"UUID": NIL}], 400, f"UUID: no image {NIL} with versions"),
        ([{"UUID": theirs}], 403, f"image {theirs} belongs to someone else"),
        ([{"UUID": mine, "Version": 9}], 400, f"Version: image {mine} has no version 9"),
        ([{"UUID": mine}, {"UUID": mine}], 400, f"UUID: image {mine} is listed twice"),
    ):
        refused(await alice.post(setups, {"Name": "x", "Images": images}), status, message)
    setup = await new_setup(alice, "alice", [{"UUID": mine}])
    refused(
        await alice.request("DELETE", f"{setups}/{setup['UUID']}/images?UUID={theirs}"),
        404,
        f"image {theirs} is not in setup {setup['UUID']}",
    )
    r = await alice.request(
        "POST",
        f"/image/{mine}",
        data=b"v2",
        headers={"Content-Type": "application/octet-stream", "X-BAAS-NewVersion": "false"},
    )
    refused(
        r,
        409,
        f"version 1 is frozen in setup 's' ({setup['UUID']}); upload a new version instead",
    )

    empty = await new_setup(alice, "alice", [], "empty")
    refused(
        await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": empty["UUID"]}),
        400,
        "SetupUUID: the setup has no images",
    )
    r = await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})
    assert r.code == 200, r.text
    work = r.json()
    refused(
        await alice.request("DELETE", f"/image/{mine}"),
        409,
        "the image is used by queued or running boot work; cancel it first",
    )
    progress = f"/machine/{MAC}/progress"
    refused(
        await admin.post(progress, {"Image": mine, "Written": 0, "Total": 2}),
        409,
        "the machine has no work in progress",
    )
    refused(
        await admin.post(f"/machine/{MAC}/boot/complete", {"Success": True}),
        409,
        "the machine has no work in progress",
    )
    mgmtos = await machine_client(server)
    assert (await mgmtos.get(f"/machine/{MAC}/boot")).code == 200
    refused(
        await admin.post(progress, {"Image": theirs, "Written": 0, "Total": 2}),
        400,
        "Image: not an image of the work in progress",
    )
    assert (await mgmtos.post(f"/machine/{MAC}/boot/complete", {"Success": True})).code == 200
    r = await alice.request("DELETE", f"/machine/{MAC}/boot/queue/{work['ID']}")
    refused(r, 409, f"queue entry {work['ID']} is done; only queued work can be cancelled")
    refused(await admin.get("/build/999"), 404, "no build 999")
