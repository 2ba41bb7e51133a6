"""Image setups: named lists of images frozen at a version, owned by a user
(/user/{name}/image_setup…)."""

from __future__ import annotations

import pytest_twisted

from tests.helpers import MAC, add_machine, entries, new_image, upload_version


async def setups_of(client, name: str) -> list:
    r = await client.get(f"/user/{name}/image_setups")
    assert r.code == 200, r.text
    return r.json()


async def setup_events(server, setup_uuid: str) -> list:
    r = await server.admin.get(f"/events?target_type=setup&target={setup_uuid}")
    assert r.code == 200, r.text
    return list(reversed(r.json()))  # oldest first


@pytest_twisted.ensureDeferred
async def test_create_list_get_update_delete(server):
    alice = await server.user("alice")
    disk = await new_image(alice)

    r = await alice.post(
        "/user/alice/image_setup",
        {"Name": "web", "Images": [{"UUID": disk, "Version": 0, "Update": True}]},
    )
    assert r.code == 201, r.text
    setup = r.json()
    assert setup["Name"] == "web"
    assert setup["Username"] == "alice"
    assert entries(setup) == [{"UUID": disk, "Version": 0, "Update": True}]
    uuid = setup["UUID"]
    base = f"/user/alice/image_setup/{uuid}"

    # Field names are matched without regard to case, as the original did.
    r = await alice.post("/user/alice/image_setup", {"name": "db"})
    assert r.code == 201, r.text
    db = r.json()
    assert db["Name"] == "db" and entries(db) == []

    assert [s["UUID"] for s in await setups_of(alice, "alice")] == [uuid, db["UUID"]]
    assert (await alice.get(base)).json() == setup
    assert (await alice.get(f"{base}/images")).json() == setup["Images"]

    # By name (the original's GetImageSetupsByName), and all without a name.
    r = await alice.get("/user/alice/image_setup?Name=web")
    assert r.code == 200 and [s["UUID"] for s in r.json()] == [uuid]
    assert (await alice.get("/user/alice/image_setup?Name=nope")).json() == []
    assert len((await alice.get("/user/alice/image_setup")).json()) == 2

    r = await alice.put(base, {"Name": "www"})
    assert r.code == 200, r.text
    assert r.json()["Name"] == "www"
    assert r.json()["Images"] == setup["Images"], "renaming keeps the images"
    assert (await alice.put(base, {"Name": ""})).code == 400
    r = await alice.put(base, {"Images": []})
    assert r.code == 200 and entries(r.json()) == [] and r.json()["Name"] == "www"

    r = await alice.delete(base)
    assert r.code == 200, r.text
    assert r.text.strip() == "Successfully deleted image setup"
    assert (await alice.get(base)).code == 404
    assert (await alice.delete(base)).code == 404
    assert [s["UUID"] for s in await setups_of(alice, "alice")] == [db["UUID"]]

    actions = [(e["Action"], e["Actor"]) for e in await setup_events(server, uuid)]
    assert actions == [
        ("setup.create", "alice"),
        ("setup.update", "alice"),
        ("setup.update", "alice"),
        ("setup.delete", "alice"),
    ]


@pytest_twisted.ensureDeferred
async def test_bad_input_is_refused_and_changes_nothing(server):
    alice = await server.user("alice")
    disk = await new_image(alice)
    for body in (
        {},
        {"Name": 7},
        {"Name": "  "},
        {"Name": "x", "Images": "disk"},
        {"Name": "x", "Images": [disk]},
        {"Name": "x", "Images": [{"Version": 0}]},
        {"Name": "x", "Images": [{"UUID": disk, "Version": -1}]},
        {"Name": "x", "Images": [{"UUID": disk, "Version": "0"}]},
        {"Name": "x", "Images": [{"UUID": disk}, {"UUID": disk}]},
        {"Name": "x", "Images": [{"UUID": "no-such-image"}]},
    ):
        r = await alice.post("/user/alice/image_setup", body)
        assert r.code == 400, (body, r.code, r.text)
        assert "error" in r.json()
    r = await alice.request("POST", "/user/alice/image_setup", data=b"{not json")
    assert r.code == 400
    assert await setups_of(alice, "alice") == []
    assert await setup_events_any(server) == []


async def setup_events_any(server) -> list:
    return (await server.admin.get("/events?target_type=setup")).json()


@pytest_twisted.ensureDeferred
async def test_add_replace_and_remove_images(server):
    alice = await server.user("alice")
    a, b = await new_image(alice, "a"), await new_image(alice, "b")
    await upload_version(alice, b, b"b1" * 1000)
    uuid = (await alice.post("/user/alice/image_setup", {"Name": "s"})).json()["UUID"]
    images = f"/user/alice/image_setup/{uuid}/images"

    r = await alice.post(images, {"UUID": a})
    assert r.code == 200, r.text
    assert entries(r.json()) == [{"UUID": a, "Version": 0, "Update": False}]
    r = await alice.post(images, {"UUID": b, "Version": 0, "Update": True})
    assert entries(r.json()) == [
        {"UUID": a, "Version": 0, "Update": False},
        {"UUID": b, "Version": 0, "Update": True},
    ]
    # Posting an image already in the setup replaces its entry in place.
    r = await alice.post(images, {"UUID": b, "Version": 1, "Update": False})
    assert r.code == 200, r.text
    assert entries(r.json()) == [
        {"UUID": a, "Version": 0, "Update": False},
        {"UUID": b, "Version": 1, "Update": False},
    ]
    assert (await alice.get(images)).json() == r.json()["Images"]

    # Remove by ?UUID=, then by body.
    r = await alice.delete(f"{images}?UUID={a}")
    assert r.code == 200, r.text
    assert entries(r.json()) == [{"UUID": b, "Version": 1, "Update": False}]
    r = await alice.delete(images, json_body={"UUID": b})
    assert r.code == 200, r.text
    assert entries(r.json()) == []
    # Removing what is not there is a 404 and changes nothing.
    assert (await alice.delete(f"{images}?UUID={a}")).code == 404
    assert (await alice.get(images)).json() == []

    actions = [e["Action"] for e in await setup_events(server, uuid)]
    assert actions == [
        "setup.create",
        "setup.image.add",
        "setup.image.add",
        "setup.image.add",
        "setup.image.remove",
        "setup.image.remove",
    ]
    details = [e["Detail"] for e in await setup_events(server, uuid)]
    assert f"image={b} version=1 update=False" in details


@pytest_twisted.ensureDeferred
async def test_only_existing_versions_can_be_frozen(server):
    alice = await server.user("alice")
    disk = await new_image(alice)
    r = await alice.post(
        "/user/alice/image_setup", {"Name": "s", "Images": [{"UUID": disk, "Version": 1}]}
    )
    assert r.code == 400, r.text
    assert "Version" in r.json()["error"]
    assert await setups_of(alice, "alice") == []

    setup = (
        await alice.post("/user/alice/image_setup", {"Name": "s", "Images": [{"UUID": disk}]})
    ).json()
    base = f"/user/alice/image_setup/{setup['UUID']}"
    r = await alice.post(f"{base}/images", {"UUID": disk, "Version": 5, "Update": True})
    assert r.code == 400, r.text
    # A replacement list with one bad entry is refused as a whole: the
    # good entries of the old list stay, the name is not changed either.
    other = await new_image(alice, "other")
    r = await alice.put(
        base,
        {"Name": "renamed", "Images": [{"UUID": other}, {"UUID": disk, "Version": 9}]},
    )
    assert r.code == 400, r.text
    assert (await alice.get(base)).json() == setup

    # Once the version exists it can be frozen.
    assert await upload_version(alice, disk, b"x" * 4096) == 1
    r = await alice.post(f"{base}/images", {"UUID": disk, "Version": 1})
    assert r.code == 200, r.text
    assert entries(r.json()) == [{"UUID": disk, "Version": 1, "Update": False}]


@pytest_twisted.ensureDeferred
async def test_no_version_freezes_the_latest_at_that_moment(server):
    alice = await server.user("alice")
    disk = await new_image(alice)
    assert await upload_version(alice, disk, b"one" * 1000) == 1
    r = await alice.post("/user/alice/image_setup", {"Name": "s", "Images": [{"UUID": disk}]})
    setup = r.json()
    assert entries(setup) == [{"UUID": disk, "Version": 1, "Update": False}]

    # A later upload does not move the setup along.
    assert await upload_version(alice, disk, b"two" * 1000) == 2
    base = f"/user/alice/image_setup/{setup['UUID']}"
    assert (await alice.get(base)).json()["Images"][0]["Version"]["Version"] == 1

    # Adding it again without a version freezes the new latest.
    r = await alice.post(f"{base}/images", {"UUID": disk, "Update": True})
    assert entries(r.json()) == [{"UUID": disk, "Version": 2, "Update": True}]
    r = await alice.put(base, {"Images": [{"UUID": disk}]})
    assert entries(r.json()) == [{"UUID": disk, "Version": 2, "Update": False}]


@pytest_twisted.ensureDeferred
async def test_other_users_images_and_setups_are_refused(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    mine = await new_image(alice, "mine")
    theirs = await new_image(bob, "theirs")

    r = await alice.post("/user/alice/image_setup", {"Name": "s", "Images": [{"UUID": theirs}]})
    assert r.code == 403, r.text
    assert await setups_of(alice, "alice") == []

    setup = (
        await alice.post("/user/alice/image_setup", {"Name": "s", "Images": [{"UUID": mine}]})
    ).json()
    base = f"/user/alice/image_setup/{setup['UUID']}"
    assert (await alice.post(f"{base}/images", {"UUID": theirs})).code == 403
    assert (await alice.put(base, {"Images": [{"UUID": theirs}]})).code == 403
    assert (await alice.get(base)).json() == setup

    # Bob may not see or touch alice's setups: the access rule says no
    # before anything is looked up.
    for method, path, body in [
        ("GET", "/user/alice/image_setups", None),
        ("GET", "/user/alice/image_setup?Name=s", None),
        ("POST", "/user/alice/image_setup", {"Name": "sneaky"}),
        ("GET", base, None),
        ("PUT", base, {"Name": "bob's now"}),
        ("DELETE", base, None),
        ("GET", f"{base}/images", None),
        ("POST", f"{base}/images", {"UUID": theirs}),
        ("DELETE", f"{base}/images?UUID={mine}", None),
    ]:
        r = await bob.request(method, path, json_body=body)
        assert r.code == 403, (method, path, r.code, r.text)
        r = await server.anonymous.request(method, path, json_body=body)
        assert r.code == 401, (method, path, r.code, r.text)
    # Under his own name the setup is simply not there.
    assert (await bob.get(f"/user/bob/image_setup/{setup['UUID']}")).code == 404
    assert (await bob.delete(f"/user/bob/image_setup/{setup['UUID']}")).code == 404
    assert (await alice.get(base)).json() == setup
    assert [s["UUID"] for s in await setups_of(alice, "alice")] == [setup["UUID"]]
    assert await setups_of(bob, "bob") == []


@pytest_twisted.ensureDeferred
async def test_moderator_acts_for_a_user(server):
    alice = await server.user("alice")
    mod = await server.user("mod", "moderator")
    disk = await new_image(alice)

    r = await mod.post("/user/alice/image_setup", {"Name": "s", "Images": [{"UUID": disk}]})
    assert r.code == 201, r.text
    setup = r.json()
    assert setup["Username"] == "alice"
    base = f"/user/alice/image_setup/{setup['UUID']}"
    assert (await mod.put(base, {"Name": "t"})).json()["Name"] == "t"
    assert (await mod.post(f"{base}/images", {"UUID": disk, "Update": True})).code == 200

    # Alice sees what the moderator made for her and may change it herself.
    mine = (await alice.get(base)).json()
    assert mine["Name"] == "t"
    assert entries(mine) == [{"UUID": disk, "Version": 0, "Update": True}]
    assert (await mod.get("/user/alice/image_setups")).json() == [mine]

    assert (await mod.delete(base)).code == 200
    assert await setups_of(alice, "alice") == []

    # Acting for someone needs someone to act for.
    r = await mod.post("/user/ghost/image_setup", {"Name": "s"})
    assert r.code == 404, r.text
    assert await setups_of(mod, "ghost") == []
    actors = {(e["Action"], e["Actor"]) for e in await setup_events(server, setup["UUID"])}
    assert ("setup.create", "mod") in actors
    assert ("setup.delete", "mod") in actors


@pytest_twisted.ensureDeferred
async def test_root_device_hints_are_kept_shown_and_frozen_into_the_queue(server):
    alice = await server.user("alice")
    disk = await new_image(alice)
    hints = {"Serial": "S4EW", "MinSize": 100 << 30, "Rotational": False}
    # Field names match without regard to case, here as everywhere.
    given = {"serial": "S4EW", "MINSIZE": 100 << 30, "Rotational": False}
    r = await alice.post(
        "/user/alice/image_setup", {"Name": "db", "Images": [{"UUID": disk, "DiskHints": given}]}
    )
    assert r.code == 201, r.text
    setup = r.json()
    assert setup["Images"][0]["DiskHints"] == hints
    base = f"/user/alice/image_setup/{setup['UUID']}"
    assert (await alice.get(base)).json()["Images"][0]["DiskHints"] == hints

    # Changed by adding the image again; null takes them away.
    r = await alice.post(f"{base}/images", {"UUID": disk, "DiskHints": {"WWN": "naa.5000c500"}})
    assert r.json()["Images"][0]["DiskHints"] == {"WWN": "naa.5000c500"}
    r = await alice.post(f"{base}/images", {"UUID": disk, "DiskHints": None})
    assert r.json()["Images"][0]["DiskHints"] is None
    r = await alice.post(f"{base}/images", {"UUID": disk, "DiskHints": hints})

    # The queue keeps the hints the setup had when the work was queued.
    await add_machine(server)
    work = (await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})).json()
    await alice.post(f"{base}/images", {"UUID": disk, "DiskHints": None})
    queue = (await alice.get(f"/machine/{MAC}/boot/queue")).json()
    [entry] = [w for w in queue if w["ID"] == work["ID"]]
    assert entry["Images"][0]["DiskHints"] == hints


@pytest_twisted.ensureDeferred
async def test_bad_hints_are_a_400_naming_the_field_and_change_nothing(server):
    alice = await server.user("alice")
    disk = await new_image(alice)
    r = await alice.post("/user/alice/image_setup", {"Name": "db", "Images": [{"UUID": disk}]})
    base = f"/user/alice/image_setup/{r.json()['UUID']}"
    for hints, field in [
        ({"Serial": ""}, "DiskHints.Serial"),
        ({"MinSize": "1TiB"}, "DiskHints.MinSize"),
        ({"Rotational": 1}, "DiskHints.Rotational"),
        ({"Colour": "red"}, "DiskHints.Colour"),
        ({"MinSize": 10, "MaxSize": 5}, "MinSize is larger than MaxSize"),
        ("S4EW", "DiskHints: expected an object"),
    ]:
        r = await alice.post(f"{base}/images", {"UUID": disk, "DiskHints": hints})
        assert r.code == 400 and field in r.json()["error"], (hints, r.text)
        r = await alice.put(base, {"Images": [{"UUID": disk, "DiskHints": hints}]})
        assert r.code == 400 and field in r.json()["error"], (hints, r.text)
    assert (await alice.get(base)).json()["Images"][0]["DiskHints"] is None
