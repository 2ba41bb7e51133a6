"""Every answer the original server also gave decodes into mirrors of its
Go structs (tests/original_structs.py): the original's field names,
nesting and JSON types, pxed's additions beside them.  And requests in the
original's encoding are accepted next to the doc's."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests import original_structs as go
from tests.helpers import MAC, OTHER_MAC, add_machine, machine_client, new_image, upload_version


def test_decode_names_the_missing_or_mistyped_field():
    good = {"Version": 3, "ImageModelUUID": "u"}
    assert go.decode("Version", good) == go.Version(3, "u")
    cases = [
        ({"ImageModelUUID": "u"}, "Version.Version: missing"),
        ({"Version": "3", "ImageModelUUID": "u"}, "Version.Version: expected an unsigned"),
        ({"Version": -1, "ImageModelUUID": "u"}, "Version.Version: expected an unsigned"),
        ({"Version": True, "ImageModelUUID": "u"}, "Version.Version: expected an unsigned"),
        ({"Version": 3, "ImageModelUUID": None}, "Version.ImageModelUUID: expected a string"),
    ]
    for value, message in cases:
        with pytest.raises(AssertionError, match=message):
            go.decode(go.Version, value)
    frozen = {"Image": {"Name": "x"}, "Version": good, "Update": False}
    with pytest.raises(AssertionError, match=r"ImageFrozen\.Image\.Versions: missing"):
        go.decode("ImageFrozen", frozen)
    setup = {"Name": "s", "Images": None, "Username": "u", "UUID": "x"}
    with pytest.raises(AssertionError, match=r"ImageSetup\.Images: expected a list"):
        go.decode("ImageSetup", setup)


@pytest_twisted.ensureDeferred
async def test_machines_are_machine_models(server):
    admin = server.admin
    created = go.decode("MachineModel", await add_machine(server, MAC, "a", arch="x86_64"))
    assert created.Name == "a" and created.MacAddress.Address == MAC
    assert created.Architecture == "x86_64" and created.Managed is True
    assert created.ImageUUID, "the machine image"
    # The original's single-MAC form in, the first MAC out as MacAddress.
    r = await admin.post(
        "/machine",
        {
            "Name": "b",
            "Architecture": "Arm64",
            "Managed": False,
            "MacAddress": {"Address": OTHER_MAC.upper()},
            "ImageUUID": "",
        },
    )
    assert r.code == 201, r.text
    b = go.decode("MachineModel", r.json())
    assert (b.Architecture, b.Managed, b.MacAddress.Address) == ("arm64", False, OTHER_MAC)

    r = await admin.put(f"/machine/{OTHER_MAC}", {"MacAddresses": ["52:54:00:00:00:02", OTHER_MAC]})
    assert r.code == 200, r.text
    m = go.decode("MachineModel", r.json())
    assert m.MacAddress.Address == "52:54:00:00:00:02", "the first MAC"
    assert r.json()["MacAddresses"] == [{"Mac": "52:54:00:00:00:02"}, {"Mac": OTHER_MAC}]

    r = await admin.put("/machine", {"Name": "c", "MacAddress": {"Address": "52:54:00:00:00:03"}})
    assert r.code == 200, r.text
    go.decode("MachineModel", r.json())
    assert (await admin.get(f"/machine/{MAC}")).json() == (await admin.get("/machines")).json()[0]
    for m in (await admin.get("/machines")).json():
        go.decode("MachineModel", m)
    assert "name" not in (await admin.get(f"/machine/{MAC}")).json()


@pytest_twisted.ensureDeferred
async def test_images_are_image_models(server):
    alice = await server.user("alice")
    r = await alice.post(
        "/image",
        {
            "Name": "deb",
            "Size": 1024 * 1024,
            "Type": "System",
            "DiskCompressionStrategy": "GZip",
            "ImageFileType": "RAW",
            "Filesystem": "RAW",
        },
    )
    assert r.code == 201, r.text
    image = go.decode("ImageModel", r.json())
    assert (image.Type, image.DiskCompressionStrategy, image.ImageFileType, image.Filesystem) == (
        "system",
        "gzip",
        "raw",
        "raw",
    )
    assert image.Username == "alice"
    assert image.Versions == [go.Version(0, image.UUID)]
    await upload_version(alice, image.UUID, b"x" * 4096)
    got = go.decode("ImageModel", (await alice.get(f"/image/{image.UUID}")).json())
    assert got.Versions == [go.Version(0, image.UUID), go.Version(1, image.UUID)]
    r = await alice.put(f"/image/{image.UUID}", {"Name": "renamed", "Type": "USER"})
    assert r.code == 200, r.text
    assert go.decode("ImageModel", r.json()).Type == "user"
    for path in ("/user/alice/images", "/user/alice/images/renamed"):
        [listed] = (await alice.get(path)).json()
        assert go.decode("ImageModel", listed).UUID == image.UUID
    r = await alice.post("/user/alice/image", {"Name": "two", "Size": 1024 * 1024})
    assert r.code == 201, r.text
    go.decode("ImageModel", r.json())


@pytest_twisted.ensureDeferred
async def test_image_in_the_go_encoding_of_an_image_model_is_accepted(server):
    # json.Encode(images.ImageModel{Name: "yeet", Username: "alice"}): the
    # zero values are "" (unset) and null.
    alice = await server.user("alice")
    body = {
        "Name": "yeet",
        "Versions": None,
        "UUID": "",
        "Username": "alice",
        "DiskCompressionStrategy": "",
        "ImageFileType": "raw",
        "Type": "",
        "Checksum": "",
        "Filesystem": "",
    }
    r = await alice.post("/user/alice/image", {**body, "Size": 1024 * 1024})
    assert r.code == 201, r.text
    image = go.decode("ImageModel", r.json())
    assert (image.Name, image.Type, image.DiskCompressionStrategy) == ("yeet", "base", "none")


@pytest_twisted.ensureDeferred
async def test_setups_are_image_setups_with_frozen_images(server):
    alice = await server.user("alice")
    a = await new_image(alice, "a")
    b = await new_image(alice, "b")
    await upload_version(alice, b, b"b" * 4096)
    # All three entry forms: the doc's {Uuid, Version}, {UUID, Version} and
    # the original's ImageFrozen {Image: {UUID}, Version: {Version}}.
    r = await alice.post(
        "/user/alice/image_setup",
        {
            "Name": "s",
            "Images": [
                {"Uuid": a, "Version": 0},
                {"Image": {"UUID": b}, "Version": {"Version": 1}, "Update": True},
            ],
        },
    )
    assert r.code == 201, r.text
    setup = go.decode("ImageSetup", r.json())
    assert (setup.Name, setup.Username) == ("s", "alice")
    assert [(f.Image.UUID, f.Version.Version, f.Update) for f in setup.Images] == [
        (a, 0, False),
        (b, 1, True),
    ]
    assert setup.Images[1].Version.ImageModelUUID == b
    assert setup.Images[1].Image.Versions == [go.Version(0, b), go.Version(1, b)]
    base = f"/user/alice/image_setup/{setup.UUID}"

    # A setup as GET answered it goes back in as it is.
    same = (await alice.get(base)).json()
    r = await alice.put(base, {"Name": "t", "Images": same["Images"]})
    assert r.code == 200, r.text
    assert go.decode("ImageSetup", r.json()).Images == setup.Images

    r = await alice.delete(f"{base}/images", json_body={"UUID": a})
    assert r.code == 200, r.text
    go.decode("ImageSetup", r.json())
    r = await alice.post(f"{base}/images", {"UUID": a, "Version": 0})
    assert r.code == 200, r.text
    assert [f.Image.UUID for f in go.decode("ImageSetup", r.json()).Images] == [b, a]
    for f in (await alice.get(f"{base}/images")).json():
        go.decode("ImageFrozen", f)
    for path in (
        "/user/alice/image_setups",
        "/user/alice/image_setup",
        "/user/alice/image_setup?Name=t",
    ):
        r = await alice.get(path)
        assert r.code == 200, (path, r.text)
        [listed] = r.json()
        go.decode("ImageSetup", listed)
    empty = (await alice.post("/user/alice/image_setup", {"Name": "e"})).json()
    assert go.decode("ImageSetup", empty).Images == []


@pytest_twisted.ensureDeferred
async def test_queue_entries_are_boot_setups(server):
    await add_machine(server, MAC, "box")
    alice = await server.user("alice")
    disk = await new_image(alice)
    setup = (
        await alice.post(
            "/user/alice/image_setup",
            {"Name": "s", "Images": [{"UUID": disk, "Version": 0, "Update": True}]},
        )
    ).json()
    r = await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"], "Update": True})
    assert r.code == 200, r.text
    work = go.decode("BootSetup", r.json())
    assert (work.MachineMAC, work.SetupUUID, work.Update) == (MAC, setup["UUID"], True)
    assert work.Machine.Name == "box" and work.Machine.MacAddress.Address == MAC
    assert (work.Setup.Name, work.Setup.UUID, work.Setup.Username) == ("s", setup["UUID"], "alice")
    assert [(f.Image.UUID, f.Version.Version, f.Update) for f in work.Setup.Images] == [
        (disk, 0, True)
    ]

    # A body in the BootSetup encoding (Go's zero SetupUUID, the setup's
    # UUID in Setup) queues that setup.
    r = await alice.post(f"/machine/{MAC}/boot", {**r.json(), "SetupUUID": ""})
    assert r.code == 200, r.text
    assert go.decode("BootSetup", r.json()).SetupUUID == setup["UUID"]
    r = await alice.delete(f"/machine/{MAC}/boot/queue/{r.json()['ID']}")
    assert r.code == 200, r.text

    # The seed's one-image form answers a BootSetup as well.
    r = await alice.post(f"/machine/{MAC}/boot", {"ImageUUID": disk, "Version": 0})
    assert r.code == 200, r.text
    second = go.decode("BootSetup", r.json())
    assert second.Setup.Images[0].Image.UUID == disk

    listed = (await alice.get(f"/machine/{MAC}/boot/queue")).json()
    assert [go.decode("BootSetup", w).SetupUUID for w in listed] == [
        setup["UUID"],
        second.SetupUUID,
    ]
    r = await alice.delete(f"/machine/{MAC}/boot/queue/{r.json()['ID']}")
    assert r.code == 200, r.text
    assert r.json()["State"] == "cancelled"
    go.decode("BootSetup", r.json())

    machine = await machine_client(server)
    assert (await machine.get(f"/machine/{MAC}/boot")).code == 200
    r = await machine.post(f"/machine/{MAC}/boot/complete", {"Success": True})
    assert r.code == 200, r.text
    done = go.decode("BootSetup", r.json())
    assert r.json()["State"] == "done" and done.SetupUUID == setup["UUID"]


@pytest_twisted.ensureDeferred
async def test_users_are_user_models(server):
    admin = server.admin
    r = await admin.post(
        "/user",
        {"Username": "bob", "Name": "Bob", "Email": "b@x.org", "Role": "User"},
        headers={"Accept": "application/json"},
    )
    assert r.code == 201, r.text
    assert go.decode("UserModel", r.json()) == go.UserModel("bob", "Bob", "b@x.org", "user")
    go.decode("UserModel", (await admin.get("/user/me")).json())
    go.decode("UserModel", (await admin.get("/user/bob")).json())
    for u in (await admin.get("/users")).json():
        go.decode("UserModel", u)
    r = await admin.put("/user/bob", {"Name": "Robert"})
    assert go.decode("UserModel", r.json()).Name == "Robert"
