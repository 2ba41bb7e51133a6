"""The leases page: the calendar, reserving from a form and releasing, as a
user does it in Chromium, with its accessibility checks."""

from __future__ import annotations

import datetime as dt

import pytest_twisted

from tests.cli.conftest import token_of
from tests.helpers import add_machine, only_on
from tests.web.dashboard.conftest import in_browser

pytestmark = only_on("sqlite", "the browser is tested here, not the database")


@pytest_twisted.ensureDeferred
async def test_reserve_see_it_on_the_calendar_and_release_it(dashboard, server):
    for n in range(1, 4):
        await add_machine(server, mac=f"52:54:00:00:05:{n:02x}", name=f"rack2-node{n}")
    bob = await server.user("bob")
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    r = await bob.post("/leases", {"Machines": ["rack2-node3"], "Start": tomorrow, "Hours": 4})
    assert r.code == 201, r.text
    alice = await server.user("alice")

    def steps() -> None:
        d = dashboard
        d.sign_in(token_of(alice))
        d.go("leases")
        d.wait_heading("Leases")
        d.wait_text('#calendar tr[data-machine="rack2-node3"]', "bob")
        assert "free" in d.text('#calendar tr[data-machine="rack2-node1"]')
        assert "Release" not in d.text("#lease-rows"), "not alice's to release"
        d.check_accessibility("leases")
        for name in ("rack2-node1", "rack2-node2"):
            pick = "document.querySelector(`#reserve option[value='${arguments[0]}']`)"
            d.js(f"{pick}.selected = true", name)
        d.fill("#reserve input[name=Hours]", "2")
        d.fill("#reserve input[name=Start]", "soonish")
        d.click("#reserve button[type=submit]")
        d.wait_text("#status", "Start: not a time: soonish")
        d.fill("#reserve input[name=Start]", "now")
        d.click("#reserve button[type=submit]")
        d.wait_text("#status", "Reserved rack2-node1, rack2-node2 until")
        d.wait_text('#calendar tr[data-machine="rack2-node1"]', "alice")
        d.wait_text('#calendar tr[data-machine="rack2-node2"]', "alice")
        # The same hours again: the server's refusal is shown.
        d.click("#reserve button[type=submit]")
        d.wait_text("#status", "is leased to alice")
        button = d.button("Release lease 2")
        button.click()
        d.button("Confirm: Release lease 2").click()
        d.wait_text("#status", "Released lease 2")
        d.until(
            lambda: "alice" not in d.text('#calendar tr[data-machine="rack2-node1"]'),
            what="node1 free again",
        )
        d.check_accessibility("leases-after")

    await in_browser(steps)
    held = (await server.admin.get("/leases")).json()
    assert sorted((x["Machine"], x["User"]) for x in held if x["State"] != "ended") == [
        ("rack2-node2", "alice"),
        ("rack2-node3", "bob"),
    ]
