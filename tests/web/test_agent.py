"""The management OS protocol: the netboot answer hands a machine credential
over on the kernel cmdline, and the management OS uses it to take its work
(BootInform), fetch and capture images, log and report completion."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import NamedTuple

import pytest_twisted
from twisted.internet.defer import ensureDeferred

from tests.helpers import (
    MAC,
    MIB,
    OCTETS,
    OTHER_MAC,
    Client,
    add_machine,
    enqueue,
    eventually,
    machine_client,
    machine_events,
    new_image,
    upload,
)
from tests.original_structs import decode


async def machine(server, mac: str = MAC) -> dict:
    return (await server.admin.get(f"/machine/{mac}")).json()


class Queued(NamedTuple):
    machine: dict
    alice: Client
    disk: str
    work: dict


async def queued_disk(server) -> Queued:
    """A managed machine, and alice's setup of one image queued for it."""
    machine = await add_machine(server)
    alice = await server.user("alice")
    disk = await new_image(alice)
    return Queued(machine, alice, disk, await enqueue(alice, [{"UUID": disk}]))


@pytest_twisted.ensureDeferred
async def test_on_demand_netboots_exactly_while_there_is_work(server):
    await add_machine(server)
    alice = await server.user("alice")
    disk = await new_image(alice)
    anon = server.anonymous

    assert (await anon.get(f"/v1/boot/{MAC}")).code == 404
    assert "\nexit\n" in (await anon.get(f"/ipxe/{MAC}")).text

    await enqueue(alice, [{"UUID": disk}])
    r = await anon.get(f"/v1/boot/{MAC}")
    assert r.code == 200, r.text
    assert "pxed.token=pxm_" in r.json()["cmdline"]
    script = (await anon.get(f"/ipxe/{MAC}")).text
    assert "\nkernel " in script and "pxed.token=pxm_" in script

    # Taken and in progress: a reboot of the management OS still gets it.
    agent = await machine_client(server)
    assert (await agent.get(f"/machine/{MAC}/boot")).code == 200
    assert (await anon.get(f"/v1/boot/{MAC}")).code == 200
    assert "\nkernel " in (await anon.get(f"/ipxe/{MAC}")).text

    r = await agent.post(f"/machine/{MAC}/boot/complete", {"Success": True, "Message": "ok"})
    assert r.code == 200, r.text
    # Single shot: the next boot goes to the local disk.
    assert (await anon.get(f"/v1/boot/{MAC}")).code == 404
    script = (await anon.get(f"/ipxe/{MAC}")).text
    assert "\nexit\n" in script and "kernel" not in script

    # Answers are recorded when they change; repeats are counted (and
    # written a moment later).
    local = "local disk: no queued work (boot policy on-demand)"
    served = "management OS: machine has queued work"
    asked = f"for {MAC} from 127.0.0.1"
    expected = [
        ("anonymous", f"{local}; last asked via ipxe {asked}", 2),
        ("anonymous", f"{served}; last asked via ipxe {asked}", 5),
        ("anonymous", f"{local}; last asked via ipxe {asked}", 2),
    ]

    async def recorded() -> bool:
        answers = [
            (e["Actor"], e["Detail"], e["Count"])
            for e in await machine_events(alice)
            if e["Action"] == "boot.answer"
        ]
        return answers == expected

    await eventually(recorded)


@pytest_twisted.ensureDeferred
async def test_boot_inform_takes_the_oldest_entry_and_describes_it(server):
    m = await add_machine(server)
    alice = await server.user("alice")
    a, b = await new_image(alice, "a"), await new_image(alice, "b")
    r = await upload(alice, f"/image/{b}", b"b" * 5000)
    b1 = r.json()
    first = await enqueue(alice, [{"UUID": a, "Update": True}, {"UUID": b, "Version": 1}])
    second = await enqueue(alice, [{"UUID": b}])
    agent = await machine_client(server)

    r = await agent.get(f"/machine/{MAC}/boot")
    assert r.code == 200, r.text
    work = r.json()
    # The original's images.ImageSetup, which its management OS decodes.
    setup = decode("ImageSetup", work)
    assert (setup.Name, setup.Username, setup.UUID) == ("s", "alice", first["SetupUUID"])
    assert work["ID"] == first["ID"]
    assert "Setup" not in work and "Version" not in work  # one ImageSetup, not two
    assert work["State"] == "in-progress"
    assert work["StartedAt"] is not None
    [img_a, img_b, own] = work["Images"]
    assert [f.Image.UUID for f in setup.Images] == [a, b, m["ImageUUID"]]
    assert [(f.Version.Version, f.Version.ImageModelUUID) for f in setup.Images] == [
        (0, a),
        (1, b),
        (0, m["ImageUUID"]),
    ]
    assert [f.Update for f in setup.Images] == [True, False, True]
    assert [f.Image.Type for f in setup.Images] == ["base", "base", "machine"]
    assert [f.Image.Name for f in setup.Images] == ["a", "b", "machine-m"]
    # pxed's fields beside each entry: where it goes and how to check it.
    assert [e["Disk"] for e in work["Images"]] == [0, 1, None]
    assert img_a["Size"] == MIB
    assert img_a["Sha256"] == hashlib.sha256(bytes(MIB)).hexdigest()
    assert img_a["URL"] == f"{server.url}/image/{a}/0"
    assert img_a["UploadURL"] == f"{server.url}/machine/{MAC}/disk/{a}"
    assert img_a["DiskCompressionStrategy"] == "none"
    assert (img_b["Size"], img_b["Sha256"]) == (5000, b1["Sha256"])
    assert img_b["URL"] == f"{server.url}/image/{b}/1"
    assert own["URL"] == f"{server.url}/image/{m['ImageUUID']}/0"
    assert own["UploadURL"] == f"{server.url}/machine/{MAC}/disk/{m['ImageUUID']}"
    assert work["MachineImage"]["UUID"] == m["ImageUUID"]
    assert work["MachineImage"]["Version"] == 0
    assert work["MachineImage"]["DiskCompressionStrategy"] == "none"
    assert work["MachineImage"]["URL"] == f"{server.url}/machine/{MAC}/image"
    assert decode("MachineModel", work["Machine"]).Name == "m"
    assert work["Machine"]["MacAddresses"] == [{"Mac": MAC}]
    assert work["Machine"]["State"] == "provisioning"
    seen = dt.datetime.fromisoformat(work["Machine"]["LastSeen"])

    # The management OS may restart: it gets the same entry again.
    again = (await agent.get(f"/machine/{MAC.upper()}/boot")).json()
    assert again["ID"] == first["ID"]
    assert again["Images"] == work["Images"]
    assert dt.datetime.fromisoformat(again["Machine"]["LastSeen"]) > seen
    queue = (await server.admin.get(f"/machine/{MAC}/boot/queue")).json()
    assert [(w["ID"], w["State"]) for w in queue] == [
        (first["ID"], "in-progress"),
        (second["ID"], "queued"),
    ]
    starts = [e for e in await machine_events(alice) if e["Action"] == "queue.start"]
    assert len(starts) == 1 and starts[0]["Detail"] == f"work={first['ID']}"


@pytest_twisted.ensureDeferred
async def test_boot_inform_with_nothing_queued_is_404(start_server):
    server = await start_server(boot_policy="always")
    await add_machine(server)
    agent = await machine_client(server)
    r = await agent.get(f"/machine/{MAC}/boot")
    assert r.code == 404, r.text
    assert "error" in r.json()
    assert (await machine(server))["State"] == "new"


@pytest_twisted.ensureDeferred
async def test_the_credential_is_scoped_to_its_machine_and_images(server):
    await add_machine(server)
    other = await add_machine(server, OTHER_MAC, "other")
    alice = await server.user("alice")
    mine, elsewhere = await new_image(alice, "mine"), await new_image(alice, "elsewhere")
    data = bytes(range(256)) * 4096  # 1 MIB that is not all zeros
    v1 = (await upload(alice, f"/image/{mine}", data)).json()
    await enqueue(alice, [{"UUID": mine, "Update": True}])
    other_work = await enqueue(alice, [{"UUID": elsewhere}], OTHER_MAC)
    agent = await machine_client(server)
    await agent.get(f"/machine/{MAC}/boot")

    # Another machine's MAC: refused, and the other machine's work is untouched.
    for method, path, body in [
        ("GET", f"/machine/{OTHER_MAC}/boot", None),
        ("POST", f"/machine/{OTHER_MAC}/boot/complete", {"Success": True}),
        ("GET", f"/machine/{OTHER_MAC}/image", None),
    ]:
        r = await agent.request(method, path, json_body=body)
        assert r.code == 403, (method, path, r.code, r.text)
    r = await upload(agent, f"/machine/{OTHER_MAC}/disk/{other['ImageUUID']}", b"x" * 100)
    assert r.code == 403, r.text
    queue = (await server.admin.get(f"/machine/{OTHER_MAC}/boot/queue")).json()
    assert [(w["ID"], w["State"]) for w in queue] == [(other_work["ID"], "queued")]
    assert len((await server.admin.get(f"/image/{other['ImageUUID']}")).json()["Versions"]) == 1

    # Images outside its work: refused.
    for path in (
        f"/image/{elsewhere}/0",
        f"/image/{elsewhere}/latest",
        f"/image/{other['ImageUUID']}/0",
    ):
        r = await agent.get(path)
        assert r.code == 403, (path, r.code, r.text)
    # Its own work's image: the right bytes, with the digest as ETag.
    r = await agent.get(f"/image/{mine}/1")
    assert r.code == 200, r.text
    assert r.body == data
    assert r.header("ETag") == f'"{v1["Sha256"]}"'
    assert v1["Sha256"] == hashlib.sha256(data).hexdigest()
    # Nor is it a user credential.
    assert (await agent.get("/machines")).code == 403
    assert (await agent.get(f"/image/{mine}")).code == 403


@pytest_twisted.ensureDeferred
async def test_capture_only_images_flagged_update_in_the_running_work(server):
    await add_machine(server)
    alice = await server.user("alice")
    keep, fixed = await new_image(alice, "keep"), await new_image(alice, "fixed")
    await enqueue(alice, [{"UUID": keep, "Update": True}, {"UUID": fixed}])
    agent = await machine_client(server)

    # Queued but not yet taken: nothing is being captured.
    r = await upload(agent, f"/machine/{MAC}/disk/{keep}", b"early" * 100)
    assert r.code == 403, r.text
    assert (await agent.get(f"/machine/{MAC}/boot")).code == 200

    captured = b"captured disk" * 1000
    r = await upload(agent, f"/machine/{MAC}/disk/{keep}", captured)
    assert r.code == 200, r.text
    assert r.json()["Version"] == 1
    r = await upload(agent, f"/machine/{MAC}/disk/{fixed}", b"nope" * 100)
    assert r.code == 403, r.text
    r = await upload(agent, f"/image/{fixed}", b"nope" * 100)
    assert r.code == 403, r.text

    versions = (await alice.get(f"/image/{keep}")).json()["Versions"]
    assert [(v["Version"], v["Origin"]) for v in versions] == [(0, "created"), (1, "capture")]
    assert versions[1]["Sha256"] == hashlib.sha256(captured).hexdigest()
    assert (await alice.get(f"/image/{keep}/1")).body == captured
    assert len((await alice.get(f"/image/{fixed}")).json()["Versions"]) == 1

    image_events = (await server.admin.get(f"/events?target_type=image&target={keep}")).json()
    assert image_events[0]["Action"] == "image.version"
    assert image_events[0]["Actor"].startswith("machine:")
    assert "origin=capture" in image_events[0]["Detail"]


@pytest_twisted.ensureDeferred
async def test_machine_image_and_log_lines(server):
    m, alice, _, _ = await queued_disk(server)
    agent = await machine_client(server)
    await agent.get(f"/machine/{MAC}/boot")

    state = bytes(range(256)) * 4096
    r = await upload(agent, f"/machine/{MAC}/disk/{m['ImageUUID']}", state)
    assert r.code == 200, r.text
    assert r.json()["Version"] == 1
    r = await agent.get(f"/machine/{MAC}/image")
    assert r.code == 200, r.text
    assert r.body == state
    assert r.header("ETag") == f'"{hashlib.sha256(state).hexdigest()}"'
    taken = (await agent.get(f"/machine/{MAC}/boot")).json()
    assert taken["MachineImage"]["Version"] == 1

    for line in (
        {"Level": "info", "Message": "writing disk", "Origin": "flash"},
        {"level": "ERROR", "message": "sector 7 is tired"},
    ):
        r = await agent.post("/log", line)
        assert r.code == 200, r.text
    assert (await agent.post("/log", {"Level": "loud", "Message": "x"})).code == 400
    assert (await agent.post("/log", {"Level": "info"})).code == 400

    r = await alice.get(f"/machine/{MAC}/logs")
    assert r.code == 200, r.text
    assert [(x["Level"], x["Origin"], x["Message"]) for x in r.json()] == [
        ("info", "flash", "writing disk"),
        ("error", "mgmtos", "sector 7 is tired"),
    ]
    assert (await server.anonymous.get(f"/machine/{MAC}/logs")).code == 401
    assert (await alice.get(f"/machine/{OTHER_MAC}/logs")).code == 404


# Every level logrus has (Level.String(), which the original's log hook
# sends), pxed's own, other casings, and the level each is stored as.
LOGRUS_LEVELS = [
    ("trace", "debug"),
    ("debug", "debug"),
    ("info", "info"),
    ("warning", "warning"),
    ("error", "error"),
    ("fatal", "critical"),
    ("panic", "critical"),
    ("WARN", "warning"),
    ("Critical", "critical"),
    ("Trace", "debug"),
    ("PANIC", "critical"),
]


@pytest_twisted.ensureDeferred
async def test_every_logrus_level_is_taken_and_stored_mapped(server):
    await queued_disk(server)
    agent = await machine_client(server)
    for level, _ in LOGRUS_LEVELS:
        line = {"Level": level, "Message": f"a {level} line", "Origin": "MMOS"}
        r = await agent.post("/log", line, headers={"type": "log"})
        assert r.code == 200, (level, r.text)
    r = await agent.post("/log", {"Level": "verbose", "Message": "x"})
    assert r.code == 400
    assert "trace" in r.json()["error"] and "panic" in r.json()["error"]

    lines = (await server.admin.get(f"/machine/{MAC}/logs")).json()
    assert [(x["Level"], x["Message"], x["Origin"]) for x in lines] == [
        (stored, f"a {level} line", "MMOS") for level, stored in LOGRUS_LEVELS
    ]


@pytest_twisted.ensureDeferred
async def test_success_deploys_revokes_the_credential_and_is_single_shot(server):
    _, alice, disk, work = await queued_disk(server)
    agent = await machine_client(server)
    spare = await machine_client(server)  # pixiecore asked twice
    assert (await machine(server))["LastSeen"] is None

    # Nothing in progress yet: nothing to complete, and the entry stays queued.
    r = await agent.post(f"/machine/{MAC}/boot/complete", {"Success": True})
    assert r.code == 409, r.text
    assert (await alice.get(f"/machine/{MAC}/boot/queue")).json()[0]["State"] == "queued"

    await agent.get(f"/machine/{MAC}/boot")
    assert (await agent.post(f"/machine/{MAC}/boot/complete", {"Message": "x"})).code == 400
    r = await agent.post(f"/machine/{MAC}/boot/complete", {"Success": True, "Message": "all good"})
    assert r.code == 200, r.text
    done = r.json()
    assert (done["ID"], done["State"], done["Message"]) == (work["ID"], "done", "all good")
    assert done["FinishedAt"] is not None

    m = await machine(server)
    assert m["State"] == "deployed"
    assert m["LastSeen"] is not None
    assert (await alice.get(f"/machine/{MAC}/boot/queue")).json() == []

    # The setup ended, so did every credential minted for it.
    for client in (agent, spare):
        assert (await client.get(f"/machine/{MAC}/boot")).code == 401
        assert (await client.get(f"/image/{disk}/0")).code == 401
        assert (await client.post("/log", {"Message": "still here?"})).code == 401
    # Single shot: the firmware falls through to the disk.
    script = (await server.anonymous.get(f"/ipxe/{MAC}")).text
    assert script.rstrip().endswith("exit")
    # Completing again (as an admin may) finds nothing in progress.
    r = await server.admin.post(f"/machine/{MAC}/boot/complete", {"Success": True})
    assert r.code == 409, r.text

    actions = [e["Action"] for e in await machine_events(alice) if e["Action"].startswith("queue.")]
    assert actions == ["queue.add", "queue.start", "queue.done"]


@pytest_twisted.ensureDeferred
async def test_failure_is_recorded_with_its_message(server):
    _, alice, _, work = await queued_disk(server)
    agent = await machine_client(server)
    await agent.get(f"/machine/{MAC}/boot")

    r = await agent.post(
        f"/machine/{MAC}/boot/complete", {"Success": False, "Message": "disk on fire"}
    )
    assert r.code == 200, r.text
    assert (r.json()["State"], r.json()["Message"]) == ("failed", "disk on fire")
    m = await machine(server)
    assert m["State"] == "failed" and m["LastSeen"] is not None
    [failed] = [e for e in await machine_events(alice) if e["Action"] == "queue.failed"]
    assert failed["Detail"] == f"work={work['ID']} disk on fire"
    assert (await agent.get(f"/machine/{MAC}/boot")).code == 401
    assert (await server.anonymous.get(f"/v1/boot/{MAC}")).code == 404


@pytest_twisted.ensureDeferred
async def test_concurrent_boot_inform_takes_one_entry(server):
    _, alice, disk, first = await queued_disk(server)
    second = await enqueue(alice, [{"UUID": disk}])
    agent = await machine_client(server)

    calls = [ensureDeferred(agent.get(f"/machine/{MAC}/boot")) for _ in range(2)]
    answers = [await d for d in calls]
    assert [a.code for a in answers] == [200, 200]
    assert [a.json()["ID"] for a in answers] == [first["ID"], first["ID"]]
    queue = (await server.admin.get(f"/machine/{MAC}/boot/queue")).json()
    assert [(w["ID"], w["State"]) for w in queue] == [
        (first["ID"], "in-progress"),
        (second["ID"], "queued"),
    ]
    starts = [e for e in await machine_events(alice) if e["Action"] == "queue.start"]
    assert len(starts) == 1


@pytest_twisted.ensureDeferred
async def test_type_system_header_is_no_credential(server):
    m, alice, disk, _ = await queued_disk(server)
    system = server.anonymous.with_headers(type="system")

    for method, path, body in [
        ("GET", f"/machine/{MAC}/boot", None),
        ("POST", f"/machine/{MAC}/boot/complete", {"Success": True}),
        ("POST", "/log", {"Level": "info", "Message": "hi"}),
        ("GET", f"/machine/{MAC}/image", None),
        ("GET", f"/image/{disk}/0", None),
    ]:
        r = await system.request(method, path, json_body=body)
        assert r.code == 401, (method, path, r.code, r.text)
    r = await system.request(
        "POST", f"/machine/{MAC}/disk/{m['ImageUUID']}", data=b"x" * 100, headers=OCTETS
    )
    assert r.code == 401, r.text

    queue = (await alice.get(f"/machine/{MAC}/boot/queue")).json()
    assert [w["State"] for w in queue] == ["queued"]
    assert (await alice.get(f"/machine/{MAC}/logs")).json() == []
    assert len((await server.admin.get(f"/image/{m['ImageUUID']}")).json()["Versions"]) == 1
