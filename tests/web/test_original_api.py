"""The original server's own API tests (control_server/api/machines_test.go
and images_test.go), ported as black-box HTTP tests against pxed: the same
steps and the same assertions on status and stored state, the state read
back over the API instead of from the Go store.

What had to change, and only that:
* ``type: system`` (the original's unauthenticated "I am the system"
  header) is an admin API token: pxed has no unauthenticated system role.
* The MAC addresses "abc" and "cba" are real MACs: pxed refuses what is not
  a MAC address (400), as it looks machines up by it.
* Where the Go test wrote to its store directly (``store.UpdateMachine``,
  ``store.CreateUser``, ``store.CreateImage``), the port creates the same
  thing over the API first.
* Request bodies are the Go structs' JSON encoding, zero values included,
  as ``json.NewEncoder(...).Encode(struct)`` wrote them.
"""

from __future__ import annotations

import pytest_twisted

from tests import original_structs as go
from tests.helpers import Client

# The origin the Go tests sent along (pxed ignores it on non-preflight
# requests from origins it does not know).
ORIGIN = {"Origin": "http://localhost:9090"}

# Were "abc" and "cba" in the Go tests; pxed only takes MAC addresses.
MAC_ABC = "52:54:00:00:0a:bc"
MAC_CBA = "52:54:00:00:0c:ba"


def machine_model(mac: str, name: str) -> dict:
    """json.Encode(machinemodel.MachineModel{MacAddress: {mac}, Name: name,
    Architecture: X86_64, Managed: false})"""
    return {
        "Name": name,
        "Architecture": "x86_64",
        "Managed": False,
        "MacAddress": {"Address": mac},
        "ImageUUID": "",
    }


def image_model(name: str, username: str) -> dict:
    """json.Encode(images.ImageModel{Name: name, Username: username})"""
    return {
        "Name": name,
        "Versions": None,
        "UUID": "",
        "Username": username,
        "DiskCompressionStrategy": "",
        "ImageFileType": "raw",
        "Type": "",
        "Checksum": "",
        "Filesystem": "",
    }


async def stored_machine(system: Client, mac: str) -> go.MachineModel:
    """store.GetMachineByMac, over the API."""
    r = await system.get(f"/machine/{mac}")
    assert r.code == 200, r.text
    return go.decode("MachineModel", r.json())


# -- machines_test.go ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_api_update_machine(server):
    system = server.admin.with_headers(**ORIGIN)
    machine = machine_model(MAC_ABC, "bca")

    r = await system.put("/machine", machine)
    assert r.code == 200, r.text

    m = await stored_machine(system, MAC_ABC)
    assert m.Name == machine["Name"]
    assert m.Architecture == machine["Architecture"]
    assert m.MacAddress == go.MacAddress(MAC_ABC)


@pytest_twisted.ensureDeferred
async def test_api_update_machine_exists(server):
    system = server.admin.with_headers(**ORIGIN)
    machine = machine_model(MAC_ABC, "bca")

    r = await system.put("/machine", machine)
    assert r.code == 200, r.text
    m = await stored_machine(system, MAC_ABC)
    assert m.Name == machine["Name"]
    assert m.Architecture == machine["Architecture"]
    assert m.MacAddress == go.MacAddress(MAC_ABC)

    machine["Name"] = "xxx"
    r = await system.put("/machine", machine)
    assert r.code == 200, r.text
    m = await stored_machine(system, MAC_ABC)
    assert m.Name == "xxx"
    assert m.Architecture == machine["Architecture"]
    assert m.MacAddress == go.MacAddress(MAC_ABC)


@pytest_twisted.ensureDeferred
async def test_api_get_machine(server):
    system = server.admin.with_headers(**ORIGIN)
    machine = machine_model(MAC_ABC, "bca")
    # store.UpdateMachine(&machine)
    assert (await server.admin.put("/machine", machine)).code == 200

    r = await system.get(f"/machine/{MAC_ABC}")
    assert r.code == 200, r.text
    dm = go.decode("MachineModel", r.json())
    assert dm.Name == machine["Name"]
    assert dm.Architecture == machine["Architecture"]
    assert dm.MacAddress == go.MacAddress(MAC_ABC)


@pytest_twisted.ensureDeferred
async def test_api_get_machines(server):
    system = server.admin.with_headers(**ORIGIN)
    machine1 = machine_model(MAC_ABC, "bca")
    machine2 = machine_model(MAC_CBA, "bcd")
    # store.UpdateMachine(&machine1), store.UpdateMachine(&machine2)
    assert (await server.admin.put("/machine", machine1)).code == 200
    assert (await server.admin.put("/machine", machine2)).code == 200

    r = await system.get("/machines")
    assert r.code == 200, r.text
    dm = [go.decode("MachineModel", m) for m in r.json()]
    assert len(dm) == 2

    dm1, dm2 = dm
    assert dm1.Name != dm2.Name
    if dm1.Name == machine2["Name"]:
        dm1, dm2 = dm2, dm1

    assert dm1.Name == machine1["Name"]
    assert dm1.Architecture == machine1["Architecture"]
    assert dm1.MacAddress == go.MacAddress(MAC_ABC)

    assert dm2.Name == machine2["Name"]
    assert dm2.Architecture == machine2["Architecture"]
    assert dm2.MacAddress == go.MacAddress(MAC_CBA)


# -- images_test.go ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_api_create_image(server):
    system = server.admin.with_headers(**ORIGIN)
    # store.CreateUser(&user.UserModel{Username: "test", Role: "userVar"}):
    # "userVar" is no role pxed (or the original's UserRole) knows; "user".
    r = await server.admin.post("/user", {"Username": "test", "Role": "user"})
    assert r.code == 201, r.text

    image = image_model("yeet", "test")
    r = await system.post("/user/test/image", image)
    assert r.code == 201, r.text

    decoded = go.decode("ImageModel", r.json())
    assert decoded.UUID
    assert decoded.Name == image["Name"]

    # store.GetImageByUUID(decoded.UUID)
    r = await system.get(f"/image/{decoded.UUID}")
    assert r.code == 200, r.text
    res = go.decode("ImageModel", r.json())
    assert res.UUID == decoded.UUID
    assert res.Name == image["Name"]
    assert res.Username == "test"


@pytest_twisted.ensureDeferred
async def test_api_get_image(server):
    system = server.admin.with_headers(**ORIGIN)
    # store.CreateUser(&user.UserModel{Username: "test", Name: "Test System",
    # Role: "User"})
    r = await server.admin.post(
        "/user", {"Username": "test", "Name": "Test System", "Role": "User"}
    )
    assert r.code == 201, r.text
    # store.CreateImage(&images.ImageModel{Name: "abc", UUID: "def",
    # Username: "test"}): pxed chooses UUIDs itself, so the port takes the
    # one it was given.
    r = await server.admin.post("/user/test/image", image_model("abc", "test"))
    assert r.code == 201, r.text
    uuid = r.json()["UUID"]

    r = await system.get(f"/image/{uuid}")
    assert r.code == 200, r.text
    decoded = go.decode("ImageModel", r.json())
    assert decoded.UUID == uuid
    assert decoded.Name == "abc"
