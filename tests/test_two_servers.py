"""Two pxed processes (twistd) on one PostgreSQL database and one data dir,
driven over HTTP as a load balancer would: the queue, uploads, machine
credentials and builds hold across both, and a build outlives the server
that accepted it being killed."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.helpers import (
    TWISTD,
    Client,
    add_machine,
    eventually,
    free_port,
    machine_token,
    new_image,
    submit,
    upload,
    wait_done,
    wait_for,
)

pytestmark = pytest.mark.slow

OTHER = "52:54:00:00:00:02"


@dataclass
class Node:
    """One of the servers: enough of tests.helpers.Server for the helpers."""

    name: str
    url: str
    proc: subprocess.Popen
    log: Path
    anonymous: Client
    admin: Client


def _config(path: Path, port: int, data: Path, database: str, name: str, extra: str) -> Path:
    path.write_text(
        f'port = "tcp:{port}:interface=127.0.0.1"\n'
        f'data_dir = "{data}"\n'
        f'database = "{database}"\n'
        f'server_name = "{name}"\n'
        "build_lease = 2.0\n" + extra
    )
    return path


def start_pair(root: Path, database: str, extra: str = "") -> Iterator[tuple[Node, Node]]:
    """Servers "a" and "b", started at once on the same empty database and
    data dir (they create the schema, the admin and machine.key between
    them); killed afterwards."""
    data = root / "data"
    started: list[tuple[str, int, subprocess.Popen, Path]] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            config = _config(root / f"{name}.toml", port, data, database, name, extra)
            log = root / f"{name}.log"
            with log.open("w") as out:
                proc = subprocess.Popen(
                    [*TWISTD, "--pidfile=", "-n", "pxed", "--config", str(config)],
                    cwd=root,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            started.append((name, port, proc, log))
        nodes = []
        for name, port, proc, log in started:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_for(f"{url}/healthz", proc, timeout=60)
            except AssertionError as e:
                raise AssertionError(f"{e}\n{log.read_text()}") from None
            anonymous = Client(url)
            token = (data / "admin.token").read_text().strip()
            nodes.append(Node(name, url, proc, log, anonymous, anonymous.bearer(token)))
        yield nodes[0], nodes[1]
    finally:
        for _, _, proc, _ in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        for _, _, _, log in started:
            text = log.read_text()
            assert "Traceback" not in text, text


@pytest.fixture(scope="module")
def shared_database(postgres_cluster):
    name = postgres_cluster.create_database()
    yield postgres_cluster.url(name)
    postgres_cluster.drop_database(name)


@pytest.fixture(scope="module")
def pair(shared_database, tmp_path_factory):
    # Both lease keepers look five times a second: they race on every lease.
    yield from start_pair(
        tmp_path_factory.mktemp("two"), shared_database, "lease_check_interval = 0.2\n"
    )


def gather(calls) -> defer.Deferred:
    return defer.gatherResults([defer.ensureDeferred(c) for c in calls], consumeErrors=True)


async def _queue_setups(node: Node, mac: str, image: str, n: int) -> list[int]:
    """*n* one-image setups queued on the machine; their queue entries' IDs."""
    ids = []
    for i in range(n):
        r = await node.admin.post(
            "/user/admin/image_setup",
            {"Name": f"{mac}-{i}", "Images": [{"UUID": image, "Version": 0}]},
        )
        assert r.code == 201, r.text
        r = await node.admin.post(f"/machine/{mac}/boot", {"SetupUUID": r.json()["UUID"]})
        assert r.code == 200, r.text
        ids.append(r.json()["ID"])
    return ids


@pytest_twisted.ensureDeferred
async def test_concurrent_boot_inform_from_both_never_hands_an_entry_twice(pair):
    a, b = pair
    image = await new_image(a.admin, "queued")
    queued = {}
    for i, mac in enumerate(("52:54:00:00:00:01", OTHER)):
        await add_machine(a, mac, name=f"inform{i}")
        queued[mac] = await _queue_setups(a if i == 0 else b, mac, image, 3)
    tokens = {mac: await machine_token(a, mac) for mac in queued}
    for step in range(3):
        # Eight BootInforms per machine at once, half on each server: every
        # one answers the machine's oldest entry, now in progress.
        calls = [
            node.anonymous.bearer(tokens[mac]).get(f"/machine/{mac}/boot")
            for mac in queued
            for node in (a, b) * 4
        ]
        answers = await gather(calls)
        for mac, got in zip(
            (m for m in queued for _ in range(8)), (r.json() for r in answers), strict=True
        ):
            assert got["ID"] == queued[mac][step], got
            assert got["State"] == "in-progress"
        for mac in queued:
            r = await a.admin.get(f"/machine/{mac}/boot/queue")
            states = {e["ID"]: e["State"] for e in r.json()}
            assert list(states.values()).count("in-progress") == 1, states
            done = (b if step % 2 else a).anonymous.bearer(tokens[mac])
            r = await done.post(f"/machine/{mac}/boot/complete", {"Success": True, "Message": ""})
            assert r.code == 200, r.text
            if step < 2:
                tokens[mac] = await machine_token(b, mac)
    for mac in queued:
        r = await b.admin.get(f"/machine/{mac}/events")
        started = [e for e in r.json() if e["Action"] == "queue.start"]
        assert len(started) == 3, started  # each entry taken once


@pytest_twisted.ensureDeferred
async def test_twenty_uploads_over_both_servers_get_contiguous_versions(pair):
    a, b = pair
    image = await new_image(a.admin, "uploaded")
    payloads = [os.urandom(64 * 1024 + 4096 * i) for i in range(20)]
    sums = [hashlib.sha256(p).hexdigest() for p in payloads]
    answers = await gather(
        upload(
            (a, b)[i % 2].admin,
            f"/image/{image}",
            data,
            {"X-Checksum-Sha256": sums[i]},
        )
        for i, data in enumerate(payloads)
    )
    assert [r.code for r in answers] == [200] * 20, [r.text for r in answers]
    numbers = sorted(r.json()["Version"] for r in answers)
    assert numbers == list(range(1, 21))
    versions = (await b.admin.get(f"/image/{image}")).json()["Versions"]
    assert [v["Version"] for v in versions] == list(range(21))
    by_number = {r.json()["Version"]: sums[i] for i, r in enumerate(answers)}
    for v in versions[1:]:
        assert v["Sha256"] == by_number[v["Version"]]
    downloads = await gather((a, b)[n % 2].admin.get(f"/image/{image}/{n}") for n in range(1, 21))
    assert [hashlib.sha256(r.body).hexdigest() for r in downloads] == [
        by_number[n] for n in range(1, 21)
    ]


@pytest_twisted.ensureDeferred
async def test_a_machine_credential_minted_by_one_is_accepted_by_the_other(pair):
    a, b = pair
    mac = "52:54:00:00:00:03"
    await add_machine(a, mac, name="credential")
    image = await new_image(a.admin, "credential")
    [work] = await _queue_setups(a, mac, image, 1)
    token = await machine_token(a, mac)
    # B repeats A's credential (same machine.key, same row) ...
    assert await machine_token(b, mac) == token
    # ... and accepts it: BootInform, the machine image, a log line.
    agent = b.anonymous.bearer(token)
    r = await agent.get(f"/machine/{mac}/boot")
    assert r.code == 200, r.text
    assert r.json()["ID"] == work
    r = await agent.get(f"/machine/{mac}/image")
    assert r.code == 200, r.text
    r = await agent.post("/log", {"Level": "info", "Message": "hello from B"})
    assert r.code in (200, 201, 204), r.text
    r = await a.anonymous.bearer(token).post(
        f"/machine/{mac}/boot/complete", {"Success": True, "Message": ""}
    )
    assert r.code == 200, r.text
    # Ended on A, refused on B.
    r = await agent.get(f"/machine/{mac}/image")
    assert r.code == 401, r.text


@pytest_twisted.ensureDeferred
async def test_reservations_of_the_same_hours_through_both_servers_give_one_lease(pair):
    a, b = pair
    names = []
    for i in range(3):
        await add_machine(a, f"52:54:00:00:03:{i:02x}", name=f"leased{i}")
        names.append(f"leased{i}")
    for user in ("lessee-a", "lessee-b"):
        r = await a.admin.post("/user", {"Username": user, "Email": f"{user}@example.org"})
        assert r.code == 201, r.text
    # Eight requests at once, half on each server, alternating the holder.
    calls = [
        node.admin.post("/leases", {"Machines": names, "Hours": 1, "User": user})
        for node, user in [(a, "lessee-a"), (b, "lessee-b")] * 4
    ]
    answers = await gather(calls)
    assert sorted(r.code for r in answers) == [201] + [409] * 7, [r.text for r in answers]
    for node in (a, b):
        r = await node.admin.get("/leases?machine=leased0")
        assert len(r.json()) == 1, r.text


@pytest_twisted.ensureDeferred
async def test_a_lease_ends_once_with_both_keepers_looking(pair):
    a, b = pair
    mac = "52:54:00:00:04:01"
    await add_machine(a, mac, name="ending")
    image = await new_image(a.admin, "lease-end")
    r = await a.admin.post(
        "/user/admin/image_setup", {"Name": "base", "Images": [{"UUID": image, "Version": 0}]}
    )
    body = {"LeaseEnd": "reimage", "LeaseSetupUUID": r.json()["UUID"]}
    assert (await a.admin.put(f"/machine/{mac}", body)).code == 200
    end = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).isoformat()
    r = await b.admin.post("/leases", {"Machines": ["ending"], "End": end, "User": "admin"})
    assert r.code == 201, r.text

    async def ended() -> bool:
        events = (await a.admin.get(f"/machine/{mac}/events")).json()
        return any(e["Action"] == "lease.end" for e in events)

    await eventually(ended, timeout=15)
    await task.deferLater(reactor, 1.0, lambda: None)  # more looks by both
    actions = [e["Action"] for e in (await b.admin.get(f"/machine/{mac}/events")).json()]
    assert actions.count("lease.ending") == 1 and actions.count("lease.end") == 1, actions
    queue = (await a.admin.get(f"/machine/{mac}/boot/queue")).json()
    assert [w["SetupUUID"] for w in queue] == [body["LeaseSetupUUID"]], "re-imaged once"


# -- builds: needs Docker ------------------------------------------------------


@pytest.fixture
def build_pair(postgres_url, docker_host, base_image, tmp_path):
    yield from start_pair(tmp_path, postgres_url, f'docker_host = "{docker_host}"\n')


async def _sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def _running_on_a(b: Node, build_id: int) -> None:
    """Until the build's first log line is in (A started it), read on B."""
    for _ in range(300):
        if (await b.admin.get(f"/build/{build_id}/log?follow=0")).text.strip():
            break
        await _sleep(0.1)
    assert (await b.admin.get(f"/build/{build_id}")).json()["State"] == "running"


@pytest_twisted.ensureDeferred
async def test_a_build_outlives_the_server_that_accepted_it(build_pair, base_image, docker_host):
    import docker

    a, b = build_pair
    image = await new_image(a.admin, "built")
    sleeping = f"FROM {base_image}\nRUN sleep 120\n"
    # A cancel sent to B stops the build A runs (at A's next renewal): A's
    # one build slot frees and its next build starts.
    cancelled = await submit(a.admin, image, sleeping, fmt="tar")
    await _running_on_a(b, cancelled["ID"])
    r = await b.admin.delete(f"/build/{cancelled['ID']}")
    assert r.code == 200, r.text
    running = await submit(a.admin, image, sleeping, fmt="tar")
    queued = await submit(a.admin, image, f"FROM {base_image}\nRUN true\n", fmt="tar")
    await _running_on_a(b, running["ID"])
    assert (await b.admin.get(f"/build/{cancelled['ID']}")).json()["State"] == "cancelled"
    assert (await b.admin.get(f"/build/{queued['ID']}")).json()["State"] == "queued"

    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=30)
    # B finds A's lease lapsed (build_lease = 2 s, scanned every 0.5 s): it
    # fails the running build with the reason and runs the queued one.
    done = await wait_done(b.admin, running["ID"], timeout=60)
    assert done["State"] == "failed", done
    assert "server a stopped while the build was running" in done["Message"]
    assert done["Message"] in (await b.admin.get(f"/build/{running['ID']}/log")).text
    taken = await wait_done(b.admin, queued["ID"], timeout=120)
    assert taken["State"] == "succeeded", taken
    # B removed what the failed build left in the shared engine and data dir.
    client = docker.DockerClient(base_url=docker_host)
    label = {"label": f"pxed.build={running['ID']}"}
    try:
        for _ in range(100):
            if not client.api.containers(all=True, filters=label) and not client.api.images(
                filters=label
            ):
                break
            await _sleep(0.2)
        else:
            raise AssertionError("the build's containers or images are left in the engine")
    finally:
        client.close()
    # (the succeeded build's directory goes just after it ends)
    builds = a.log.parent / "data" / "builds"
    await eventually(lambda: list(builds.iterdir()) == [])
