"""The machines API, over real HTTP."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from tests.helpers import MAC


def machine(name="node1", *macs, **extra):
    return {
        "Name": name,
        "Architecture": "x86_64",
        "MacAddresses": [{"Mac": m} for m in (macs or (MAC,))],
        **extra,
    }


@pytest_twisted.ensureDeferred
async def test_create_get_list_in_seed_shape(client):
    r = await client.post("/machine", machine())
    assert r.code == 201, r.text
    created = r.json()
    assert created["Name"] == "node1"
    assert created["Architecture"] == "x86_64"
    assert created["Managed"] is True
    assert created["MacAddress"] == {"Address": MAC}
    assert created["MacAddresses"] == [{"Mac": MAC}]
    assert created["ImageUUID"]

    r = await client.get(f"/machine/{MAC}")
    assert r.code == 200
    assert r.json() == created

    r = await client.get("/machines")
    assert r.json() == [created]


@pytest_twisted.ensureDeferred
async def test_mac_normalised_on_input_and_lookup(client):
    r = await client.post("/machine", machine("n", "52-54-00-AB-CD-EF"))
    assert r.json()["MacAddresses"] == [{"Mac": "52:54:00:ab:cd:ef"}]
    for form in ("52-54-00-AB-CD-EF", "52:54:00:Ab:cD:eF", "525400abcdef"):
        r = await client.get(f"/machine/{form}")
        assert r.code == 200, form
        assert r.json()["Name"] == "n"


@pytest_twisted.ensureDeferred
async def test_keys_matched_case_insensitively_and_single_mac_form(client):
    r = await client.post(
        "/machine",
        {
            "name": "lower",
            "architecture": "arm64",
            "managed": False,
            "macaddress": {"address": "AA:BB:CC:DD:EE:01"},
        },
    )
    assert r.code == 201, r.text
    body = r.json()
    assert (body["Name"], body["Architecture"], body["Managed"]) == ("lower", "arm64", False)
    assert body["MacAddresses"] == [{"Mac": "aa:bb:cc:dd:ee:01"}]
    assert body["MacAddress"] == {"Address": "aa:bb:cc:dd:ee:01"}


@pytest_twisted.ensureDeferred
async def test_several_macs_find_the_same_machine(client):
    macs = ("52:54:00:00:00:01", "52:54:00:00:00:02")
    await client.post("/machine", machine("multi", *macs))
    for mac in macs:
        assert (await client.get(f"/machine/{mac}")).json()["Name"] == "multi"


@pytest_twisted.ensureDeferred
async def test_put_machine_creates_then_updates(client):
    r = await client.put("/machine", machine("first"))
    assert r.code == 200
    r = await client.put(
        "/machine", machine("renamed", MAC, "52:54:00:00:00:09", Architecture="arm64")
    )
    assert r.code == 200
    assert r.json()["Name"] == "renamed"
    assert r.json()["Architecture"] == "arm64"
    all_machines = (await client.get("/machines")).json()
    assert len(all_machines) == 1
    assert {m["Mac"] for m in all_machines[0]["MacAddresses"]} == {MAC, "52:54:00:00:00:09"}


@pytest_twisted.ensureDeferred
async def test_put_machine_by_mac_changes_only_given_fields(client):
    await client.post("/machine", machine())
    r = await client.put(f"/machine/{MAC}", {"Managed": False})
    assert r.code == 200
    assert r.json()["Managed"] is False
    assert r.json()["Name"] == "node1"


@pytest_twisted.ensureDeferred
async def test_delete(client):
    await client.post("/machine", machine())
    r = await client.delete(f"/machine/{MAC}")
    assert r.code == 200
    assert r.text.strip() == "Successfully deleted"
    assert (await client.get(f"/machine/{MAC}")).code == 404
    assert (await client.delete(f"/machine/{MAC}")).code == 404


@pytest_twisted.ensureDeferred
async def test_bad_input_is_400_and_changes_nothing(client):
    await client.post("/machine", machine())
    before = (await client.get("/machines")).json()
    cases = [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"Name": 5, "MacAddresses": [{"Mac": "52:54:00:00:00:07"}]}', "Name"),
        (b'{"Name": "x", "Managed": "yes", "MacAddresses": ["52:54:00:00:00:07"]}', "Managed"),
        (b'{"Name": "x", "MacAddresses": [{"Mac": "00:11:22:33:44:55:66"}]}', "MAC"),
        (b'{"Name": "x", "MacAddresses": [{"Mac": "zz:11:22:33:44:55"}]}', "MAC"),
        (b'{"Name": "x", "MacAddresses": []}', "MacAddresses"),
        (b'{"Name": "x"}', "MacAddresses"),
        (
            b'{"Name": "x", "Architecture": "sparc", "MacAddresses": ["52:54:00:00:00:07"]}',
            "Architecture",
        ),
    ]
    for body, word in cases:
        for method, path in (("POST", "/machine"), ("PUT", "/machine")):
            r = await client.request(method, path, data=body)
            assert r.code == 400, (method, body, r.text)
            assert word in r.json()["error"], (body, r.json())
    r = await client.put(f"/machine/{MAC}", data=b'{"Managed": 1}')
    assert r.code == 400
    r = await client.get("/machine/not-a-mac")
    assert r.code == 400
    assert (await client.get("/machines")).json() == before


@pytest_twisted.ensureDeferred
async def test_mac_of_another_machine_is_409_and_changes_nothing(client):
    await client.post("/machine", machine("a", MAC))
    await client.post("/machine", machine("b", "52:54:00:00:00:0b"))
    before = (await client.get("/machines")).json()

    r = await client.post("/machine", machine("c", "52:54:00:00:00:0c", MAC))
    assert r.code == 409
    assert "'a'" in r.json()["error"]
    r = await client.put("/machine/52:54:00:00:00:0b", {"MacAddresses": [{"Mac": MAC}]})
    assert r.code == 409
    r = await client.put("/machine", machine("x", MAC, "52:54:00:00:00:0b"))
    assert r.code == 409
    r = await client.post("/machine", machine("a", "52:54:00:00:00:0d"))
    assert r.code == 409, "duplicate name"
    assert (await client.get("/machines")).json() == before


@pytest_twisted.ensureDeferred
async def test_errors_are_json_without_tracebacks(client):
    r = await client.get("/no/such/route")
    assert r.code == 404
    assert r.json() == {"error": "no such route"}
    r = await client.request("PATCH", "/machines")
    assert r.code == 405
    assert "error" in r.json()


@pytest_twisted.ensureDeferred
async def test_concurrent_creations_of_one_machine_are_one_201_and_409s(server):
    # On PostgreSQL these run on several writer threads at once.
    for round_ in range(3):
        body = {"Name": f"m{round_}", "MacAddresses": [{"Mac": f"52:54:00:00:01:0{round_}"}]}
        answers = await defer.gatherResults(
            [defer.ensureDeferred(server.admin.post("/machine", body)) for _ in range(8)]
        )
        assert sorted(r.code for r in answers) == [201] + [409] * 7
