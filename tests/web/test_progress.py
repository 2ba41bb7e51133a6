"""Deploy progress: the management OS reports bytes written of each image
(POST /machine/{mac}/progress); GET /machine/{mac} shows the step and the
percentage, and the work's timeline is in the machine's events."""

from __future__ import annotations

import pytest_twisted

from tests import original_structs as go
from tests.helpers import (
    MAC,
    MIB,
    OTHER_MAC,
    add_machine,
    enqueue,
    eventually,
    machine_client,
    machine_events,
    new_image,
    upload_version,
)


async def progress(server) -> dict | None:
    r = await server.admin.get(f"/machine/{MAC}")
    assert r.code == 200, r.text
    go.decode("MachineModel", r.json())
    found = r.json()["Progress"]
    if found is not None:
        go.decode(go.Progress, found)
    return found


@pytest_twisted.ensureDeferred
async def test_step_percentage_and_timeline_of_a_deploy(server):
    await add_machine(server)
    alice = await server.user("alice")
    first, second = await new_image(alice, "a"), await new_image(alice, "b")
    await upload_version(alice, first, b"a" * 3 * MIB)
    await upload_version(alice, second, b"b" * MIB)
    assert await progress(server) is None
    work = await enqueue(alice, [{"UUID": first, "Version": 1}, {"UUID": second, "Version": 1}])
    found = await progress(server)
    assert (found["WorkID"], found["Step"], found["Percent"]) == (work["ID"], "queued", 0)
    assert (found["Total"], found["Images"]) == (4 * MIB, 2)
    mgmtos = await machine_client(server)

    async def netbooted() -> bool:
        # Recorded just after the answer that served the work (off its path).
        return (await progress(server))["Step"].startswith("netbooted")

    await eventually(netbooted)
    assert (await mgmtos.get(f"/machine/{MAC}/boot")).code == 200
    assert (await progress(server))["Step"] == "started"

    async def report(image: str, written: int, total: int) -> dict:
        body = {"Image": image, "Written": written, "Total": total}
        r = await mgmtos.post(f"/machine/{MAC}/progress", body)
        assert r.code == 200, r.text
        return r.json()

    assert (await report(first, 0, 3 * MIB))["Step"] == "writing image 1 of 2"
    half = await report(first, 3 * MIB // 2, 3 * MIB)
    assert (half["Percent"], half["ImageWritten"], half["ImageTotal"]) == (
        37,
        3 * MIB // 2,
        3 * MIB,
    )
    assert (await progress(server)) == half
    done = await report(first, 3 * MIB, 3 * MIB)
    assert (done["Step"], done["Percent"], done["ImagesWritten"]) == ("wrote image 1 of 2", 75, 1)
    await report(second, MIB, MIB)
    # Written again (a retry): one event per image.
    await report(second, MIB, MIB)
    found = await progress(server)
    assert (found["Step"], found["Percent"], found["ImagesWritten"]) == ("finishing", 100, 2)

    r = await mgmtos.post(f"/machine/{MAC}/boot/complete", {"Success": True})
    assert r.code == 200
    assert await progress(server) is None
    timeline = [
        e for e in await machine_events(server.admin) if e["Action"].startswith(("queue.", "work."))
    ]
    assert [e["Action"] for e in timeline] == [
        "queue.add",
        "work.netboot",
        "queue.start",
        "work.image-written",
        "work.image-written",
        "queue.done",
    ]
    written = timeline[3]["Detail"]
    assert f"image={first} (a) v1: {3 * MIB} bytes in " in written and "MB/s" in written
    assert all(f"work={work['ID']}" in e["Detail"] for e in timeline)


@pytest_twisted.ensureDeferred
async def test_reports_are_checked_and_bounded(server):
    await add_machine(server)
    await add_machine(server, OTHER_MAC, "other")
    alice = await server.user("alice")
    disk, elsewhere = await new_image(alice, "disk"), await new_image(alice, "other")
    await enqueue(alice, [{"UUID": disk}])
    mgmtos = await machine_client(server)
    path = f"/machine/{MAC}/progress"
    r = await mgmtos.post(path, {"Image": disk, "Written": 0, "Total": MIB})
    assert r.code == 409, "BootInform first: no work in progress yet"
    assert (await mgmtos.get(f"/machine/{MAC}/boot")).code == 200
    for body, code in (
        ({"Image": disk, "Written": 2, "Total": 1}, 400),
        ({"Image": disk, "Written": -1, "Total": 1}, 400),
        ({"Image": disk, "Written": "1", "Total": 1}, 400),
        ({"Image": disk, "Written": 1, "Total": 2**63}, 400),
        ({"Image": disk, "Written": 1}, 400),
        ({"Image": "x" * 37, "Written": 1, "Total": 1}, 400),
        # Not in its credential's scope, nor in its work.
        ({"Image": elsewhere, "Written": 1, "Total": 1}, 403),
    ):
        r = await mgmtos.post(path, body)
        assert r.code == code, (body, r.code, r.text)
    # The admin's report for an image outside the work.
    r = await server.admin.post(path, {"Image": elsewhere, "Written": 1, "Total": 1})
    assert r.code == 400 and "not an image of the work" in r.text
    r = await mgmtos.post(
        f"/machine/{OTHER_MAC}/progress", {"Image": disk, "Written": 0, "Total": 1}
    )
    assert r.code == 403
    assert (await progress(server))["Step"] == "started"
    assert not [
        e for e in await machine_events(server.admin) if e["Action"] == "work.image-written"
    ]
