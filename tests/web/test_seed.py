"""The cloud-init seed pxed makes for a deploy (GET /machine/{mac}/seed),
read back with mtools as cloud-init would find it."""

from __future__ import annotations

import email
import json
import os
import subprocess

import pytest_twisted

from tests.helpers import (
    MAC,
    add_machine,
    enqueue,
    machine_client,
    machine_events,
    new_image,
    new_setup,
    require_tool,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEBu2i2P/uExF5yjGB2ciJ4cDeOeALQxl3+QlViZqYJt alice@lab"
SECRET = "s3cr3t-pa55w0rd-in-user-data"


def seed_files(tmp_path, image: bytes) -> dict[str, str]:
    """The files of a seed image, and its label, as mtools reads them."""
    path = tmp_path / "seed.img"
    path.write_bytes(image)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

    def mtools(tool: str, *args: str) -> str:
        exe = require_tool(tool, "mtools")
        return subprocess.run([exe, "-i", str(path), *args], capture_output=True, text=True,
                              check=True, env=env).stdout  # fmt: skip

    found = {"label": mtools("mlabel", "-s", "::").strip()}
    for name in ("meta-data", "user-data", "network-config"):
        found[name] = mtools("mtype", f"::{name}")
    return found


async def deploying(server, *, cloud_init: bool = True, **queued) -> tuple:
    """alice's cloud-init image queued for machine "Rack 1/Node-07" with
    *queued* (Seed, UserData); the management OS's client, its BootInform."""
    await add_machine(server, name="Rack 1/Node-07")
    alice = await server.user("alice")
    assert (await alice.post("/user/alice/keys", {"Key": KEY})).code == 201
    disk = await new_image(alice)
    r = await alice.put(f"/image/{disk}", {"CloudInit": cloud_init})
    assert r.code == 200 and r.json()["CloudInit"] is cloud_init, r.text
    setup = await new_setup(alice, "alice", [{"UUID": disk}])
    r = await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"], **queued})
    assert r.code == 200, r.text
    mgmtos = await machine_client(server)
    inform = await mgmtos.get(f"/machine/{MAC}/boot")
    assert inform.code == 200, inform.text
    return mgmtos, inform.json()


@pytest_twisted.ensureDeferred
async def test_the_seed_has_the_hostname_the_users_keys_and_the_network(server, tmp_path):
    mgmtos, inform = await deploying(server)
    assert inform["Seed"] == {"URL": f"{server.url}/machine/{MAC}/seed"}

    r = await mgmtos.get(f"/machine/{MAC}/seed")

    assert r.code == 200 and r.headers.getRawHeaders("content-type") == ["application/octet-stream"]
    files = seed_files(tmp_path, r.body)
    assert "CIDATA" in files["label"]
    meta = json.loads(files["meta-data"])
    assert meta["local-hostname"] == "rack-1-node-07"
    assert meta["instance-id"].endswith(f"-{inform['ID']}")
    assert files["user-data"].startswith("#cloud-config\n")
    config = json.loads(files["user-data"].split("\n", 1)[1])
    assert config["hostname"] == "rack-1-node-07" and config["ssh_authorized_keys"] == [KEY]
    network = json.loads(files["network-config"])
    assert network["version"] == 2
    assert network["ethernets"]["boot"] == {"match": {"macaddress": MAC}, "dhcp4": True}


@pytest_twisted.ensureDeferred
async def test_the_users_user_data_goes_beside_pxeds_and_nowhere_else(server, tmp_path):
    user_data = f"#cloud-config\nchpasswd:\n  list: |\n    root:{SECRET}\n"
    mgmtos, inform = await deploying(server, UserData=user_data)
    assert inform["HasUserData"] is True and SECRET not in json.dumps(inform)

    files = seed_files(tmp_path, (await mgmtos.get(f"/machine/{MAC}/seed")).body)

    parts = [
        p for p in email.message_from_string(files["user-data"]).walk() if not p.is_multipart()
    ]
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", "text/cloud-config"]
    assert KEY in parts[0].get_payload(decode=True).decode()
    assert parts[1].get_payload(decode=True).decode() == user_data
    # Not in the queue, the events or the logs.
    queue = (await server.admin.get(f"/machine/{MAC}/boot/queue")).text
    everything = queue + json.dumps(await machine_events(server.admin))
    everything += (await server.admin.get("/events?limit=1000")).text
    assert SECRET not in everything
    sent = [e for e in await machine_events(server.admin) if e["Action"] == "seed.sent"]
    assert len(sent) == 1 and "keys=1 user-data=yes" in sent[0]["Detail"]


@pytest_twisted.ensureDeferred
async def test_no_seed_unless_asked_or_the_image_boots_cloud_init(server):
    mgmtos, inform = await deploying(server, cloud_init=False)
    assert inform["Seed"] is None
    assert (await mgmtos.get(f"/machine/{MAC}/seed")).code == 404


@pytest_twisted.ensureDeferred
async def test_seed_false_turns_it_off_for_a_cloud_init_image(server):
    mgmtos, inform = await deploying(server, Seed=False)
    assert inform["Seed"] is None
    assert (await mgmtos.get(f"/machine/{MAC}/seed")).code == 404


@pytest_twisted.ensureDeferred
async def test_the_seed_is_for_the_machine_only_and_bad_user_data_is_refused(server):
    await add_machine(server)
    alice = await server.user("alice")
    disk = await new_image(alice)
    setup = await new_setup(alice, "alice", [{"UUID": disk}])
    for body, reason in [
        ({"UserData": "x" * (32 * 1024 + 1)}, "UserData: longer than"),
        ({"UserData": "#!/bin/sh\n", "Seed": False}, "would reach nothing"),
        ({"Seed": "yes"}, "Seed"),
    ]:
        r = await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"], **body})
        assert r.code == 400 and reason in r.json()["error"], (body, r.text)
    assert (await alice.get(f"/machine/{MAC}/boot/queue")).json() == []
    await enqueue(alice, [{"UUID": disk}], name="t")
    await (await machine_client(server)).get(f"/machine/{MAC}/boot")
    assert (await server.anonymous.get(f"/machine/{MAC}/seed")).code == 401
    assert (await alice.get(f"/machine/{MAC}/seed")).code == 403
