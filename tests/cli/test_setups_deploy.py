"""pxectl setups create/show/add/remove, and deploy --wait following the work to its
end while a management OS (this test, over HTTP) does it."""

from __future__ import annotations

import re

import pytest
import pytest_twisted

from tests.cli.conftest import OnPty, screen_lines
from tests.helpers import MAC, MIB, add_machine, eventually, machine_client, new_image


@pytest_twisted.ensureDeferred
async def test_setups_create_and_show(server, pxectl):
    first, second = await new_image(server.admin, "a"), await new_image(server.admin, "b")
    args = ["node", f"{first}:0", second, "--update", second, "--json"]
    r = await pxectl.ok("setups", "create", *args)
    setup = r.json()
    entries = [(e["Image"]["UUID"], e["Version"]["Version"], e["Update"]) for e in setup["Images"]]
    assert entries == [(first, 0, False), (second, 0, True)]
    assert (await pxectl.ok("setups", "show", setup["UUID"], "--json")).json() == setup
    shown = (await pxectl.ok("setups", "show", setup["UUID"])).out
    assert "Setup node" in shown and second in shown
    assert (await pxectl("setups", "create", "x", f"{first}:one")).code == 2

    third = await new_image(server.admin, "c")
    r = await pxectl.ok("setups", "add", setup["UUID"], f"{third}:0", "--update", "--json")
    assert [(e["Image"]["UUID"], e["Update"]) for e in r.json()["Images"]][-1] == (third, True)
    # Root device hints: the disk by what it is.
    r = await pxectl.ok(
        "setups", "add", setup["UUID"], third, "--serial", "S4EW", "--min-size", "500GiB",
        "--solid-state", "--json",
    )  # fmt: skip
    assert r.json()["Images"][-1]["DiskHints"] == {
        "Serial": "S4EW", "MinSize": 500 << 30, "Rotational": False,
    }  # fmt: skip
    assert "Serial=S4EW" in (await pxectl.ok("setups", "show", setup["UUID"])).out
    assert (await pxectl("setups", "add", setup["UUID"], third, "--max-size", "big")).code == 2
    r = await pxectl.ok("setups", "remove", setup["UUID"], first, "--json")
    assert [e["Image"]["UUID"] for e in r.json()["Images"]] == [second, third]
    assert "Setup node" in (await pxectl.ok("setups", "remove", setup["UUID"], second)).out
    assert (await pxectl("setups", "show", "0" * 32)).code in (1, 4)


@pytest.mark.parametrize("success", [True, False])
@pytest_twisted.ensureDeferred
async def test_deploy_wait_follows_the_work(server, pxectl, success):
    await add_machine(server)
    image = await new_image(server.admin)
    setup = (await pxectl.ok("setups", "create", "node", f"{image}:0")).out.strip()
    running = pxectl("deploy", MAC, setup, "--power", "none", "--wait")

    async def queued() -> bool:
        return bool((await server.admin.get(f"/machine/{MAC}/boot/queue")).json())

    await eventually(queued)
    mgmtos = await machine_client(server)
    assert (await mgmtos.get(f"/machine/{MAC}/boot")).code == 200
    for written in (0, MIB // 2, MIB):
        body = {"Image": image, "Written": written, "Total": MIB}
        assert (await mgmtos.post(f"/machine/{MAC}/progress", body)).code == 200
    body = {"Success": success, "Message": "" if success else "disk on fire"}
    assert (await mgmtos.post(f"/machine/{MAC}/boot/complete", body)).code == 200

    r = await running
    # Not a terminal: a line per step it saw ("queued 0%", "started 0%", …;
    # which ones depends on when it looked), then the error if any.
    steps = [line for line in r.err.splitlines() if not line.startswith("Error: ")]
    assert all(re.fullmatch(r"[a-z].* \d{1,3}%", line) for line in steps), r.err
    if success:
        assert r.code == 0, r
        assert r.out.splitlines()[-1] == "Work 1 done"
    else:
        assert r.code == 1
        assert r.err.splitlines()[-1] == "Error: work 1 failed: disk on fire"
    r = await pxectl("deploy", MAC, "0" * 32)
    assert r.code in (1, 4) and r.err.count("\n") == 1


@pytest_twisted.ensureDeferred
async def test_deploy_wait_on_a_terminal_draws_a_bar_per_image(server, pxectl):
    await add_machine(server)
    first, second = await new_image(server.admin, "a"), await new_image(server.admin, "b")
    setup = (await pxectl.ok("setups", "create", "node", f"{first}:0", f"{second}:0")).out.strip()
    args = ["deploy", MAC, setup, "--wait"]
    terminal = OnPty(args, pxectl.env())
    await terminal.expect("queued 0%")
    mgmtos = await machine_client(server)
    assert (await mgmtos.get(f"/machine/{MAC}/boot")).code == 200

    async def report(image: str, written: int, shows: str) -> None:
        body = {"Image": image, "Written": written, "Total": MIB}
        assert (await mgmtos.post(f"/machine/{MAC}/progress", body)).code == 200
        await terminal.expect(shows)

    await report(first, MIB // 2, f"image {first[:8]} [{'#' * 15}{'-' * 15}]  50% | writing")
    await report(first, MIB, "] 100% | wrote image 1 of 2, 50% of all")
    await report(second, MIB // 4, f"image {second[:8]} [{'#' * 7}")
    await report(second, MIB, "] 100% | finishing, 100% of all")
    assert (await mgmtos.post(f"/machine/{MAC}/boot/complete", {"Success": True})).code == 200
    code, out, shown = await terminal.finish()
    assert code == 0, shown
    assert out.splitlines() == [f"Queued work 1 (node) on {MAC}", "Work 1 done"]
    bars = [line for line in screen_lines(shown) if line.startswith("image ")]
    assert bars == [
        f"image {first[:8]} [{'#' * 30}] 100% | wrote image 1 of 2, 50% of all",
        f"image {second[:8]} [{'#' * 30}] 100% | finishing, 100% of all",
    ]
