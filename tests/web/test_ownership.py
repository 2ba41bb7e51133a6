"""Ownership is by user id: deleting dave and creating a new dave gives the
newcomer nothing of the old one's, and the old one's queued work never
boots.  What he owned is removed or handed to an admin (on_user_delete)."""

from __future__ import annotations

import pytest_twisted

from tests.helpers import MAC, add_machine, new_image, new_setup


async def dave_with_things(server) -> dict:
    """dave with an image, a setup of it and that setup queued for a
    managed machine (its credential handed out by a boot answer)."""
    await add_machine(server)
    dave = await server.user("dave")
    image = await new_image(dave, "daves-disk")
    setup = await new_setup(dave, "dave", [{"UUID": image, "Update": True}], "daves-setup")
    r = await dave.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})
    assert r.code == 200, r.text
    boot = await server.anonymous.get(f"/v1/boot/{MAC}")
    assert boot.code == 200, boot.text
    token = boot.json()["cmdline"].split("pxed.token=")[1].split()[0]
    return {"image": image, "setup": setup["UUID"], "work": r.json()["ID"], "token": token}


async def delete_and_recreate_dave(server, old: dict):
    r = await server.admin.delete("/user/dave")
    assert r.code == 200, r.text
    new = await server.user("dave")

    # The newcomer sees none of the old dave's things.
    assert (await new.get("/user/dave/images")).json() == []
    assert (await new.get("/user/dave/image_setups")).json() == []
    assert (await new.get(f"/image/{old['image']}")).code in (403, 404)
    r = await new.get(f"/user/dave/image_setup/{old['setup']}")
    assert r.code == 404, r.text
    r = await new.get(f"/machine/{MAC}/boot/queue")
    assert r.code == 200, r.text
    assert r.json() == []
    r = await new.delete(f"/machine/{MAC}/boot/queue/{old['work']}")
    assert r.code in (403, 404, 409), r.text

    # The old work never boots, and its credential is dead.
    r = await server.anonymous.get(f"/v1/boot/{MAC}")
    assert r.code == 404
    assert "no queued work" in r.json()["error"]
    r = await server.anonymous.get(f"/ipxe/{MAC}")
    assert "exit" in r.text and "kernel" not in r.text
    machine = server.anonymous.bearer(old["token"])
    assert (await machine.get(f"/image/{old['image']}/latest")).code in (401, 403, 404)
    return new


@pytest_twisted.ensureDeferred
async def test_a_new_user_with_a_deleted_users_name_gets_nothing_of_his(start_server):
    server = await start_server(on_user_delete="remove")
    old = await dave_with_things(server)
    await delete_and_recreate_dave(server, old)
    # Removed: nobody has them, the image's files are gone.
    assert (await server.admin.get(f"/image/{old['image']}")).code == 404
    assert (await server.admin.get("/user/admin/images")).json() == []
    images_dir = server.config.data_dir / "images" / old["image"]
    assert not images_dir.exists()
    # The new dave's own things are his.
    new = await server.user("dave2")
    assert (await new.get("/user/dave2/images")).json() == []


@pytest_twisted.ensureDeferred
async def test_with_the_admin_policy_the_admin_owns_them(start_server):
    server = await start_server(on_user_delete="admin")
    old = await dave_with_things(server)
    new = await delete_and_recreate_dave(server, old)

    image = (await server.admin.get(f"/image/{old['image']}")).json()
    assert image["Username"] == "admin"
    mine = [i["UUID"] for i in (await server.admin.get("/user/admin/images")).json()]
    assert mine == [old["image"]]
    setups = (await server.admin.get("/user/admin/image_setups")).json()
    assert [s["UUID"] for s in setups] == [old["setup"]]
    assert setups[0]["Username"] == "admin"
    # The work went too, but ended: it was cancelled, never to boot.
    assert (await server.admin.get(f"/machine/{MAC}/boot/queue")).json() == []

    # A new image of the new dave's is his, under his name.
    mine = await new_image(new, "new-disk")
    r = await new.get("/user/dave/images")
    assert [i["UUID"] for i in r.json()] == [mine]
    assert r.json()[0]["Username"] == "dave"


@pytest_twisted.ensureDeferred
async def test_the_default_policy_hands_things_to_the_admin(server):
    assert server.config.on_user_delete == "admin"
    old = await dave_with_things(server)
    await delete_and_recreate_dave(server, old)
    assert (await server.admin.get(f"/image/{old['image']}")).json()["Username"] == "admin"


@pytest_twisted.ensureDeferred
async def test_images_can_only_be_created_for_users_that_exist(server):
    r = await server.admin.post("/image", {"Name": "x", "Size": 1 << 20, "Owner": "nobody"})
    assert r.code == 404, r.text
