"""pxectl leases."""

from __future__ import annotations

import pytest_twisted

from tests.cli.conftest import token_of
from tests.helpers import MAC, add_machine


@pytest_twisted.ensureDeferred
async def test_reserve_list_extend_and_release(server, pxectl):
    await add_machine(server, name="node1")
    made = await pxectl.ok("leases", "reserve", "node1", "--hours", "2", "--json")
    [lease] = made.json()
    assert (lease["Machine"], lease["User"], lease["State"]) == ("node1", "admin", "active")

    table = (await pxectl.ok("leases", "list")).out.splitlines()
    assert table[0].split() == ["ID", "MACHINE", "USER", "START", "END", "STATE"]
    assert table[1].split()[1:3] == ["node1", "admin"]
    assert (await pxectl.ok("leases", "list", "--machine", MAC, "--json")).json() == [lease]

    extended = await pxectl.ok("leases", "extend", str(lease["ID"]), "--hours", "5", "--json")
    assert extended.json()[0]["End"] > lease["End"]
    alice = await server.user("alice")
    r = await pxectl("leases", "reserve", "node1", "--hours", "1", PXED_TOKEN=token_of(alice))
    assert r.code == 1 and "Error: 409" in r.err and "leased to admin" in r.err, r.err
    assert (await pxectl("leases", "reserve", "node1")).code == 2
    assert (await pxectl("leases", "reserve", "--hours", "1")).code == 2
    r = await pxectl("leases", "reserve", "--arch", "arm64", "--hours", "1")
    assert r.code == 1 and "no machine matches the filter" in r.err, r.err

    r = await pxectl.ok("machines", "edit", MAC, "--lease-end", "none", "--json")
    assert r.json()["LeaseEnd"] == "none"
    assert (await pxectl("machines", "edit", MAC, "--lease-end", "reimage")).code == 1

    released = await pxectl.ok("leases", "release", str(lease["ID"]))
    assert released.out.strip() == f"Released lease {lease['ID']} of node1"
    r = await pxectl.ok("leases", "reserve", "node1", "--hours", "1", PXED_TOKEN=token_of(alice))
    assert "alice" in r.out
