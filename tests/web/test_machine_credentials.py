"""Machine credentials: one per work item, put in the boot cmdline, scoped,
expiring, bound to the first BootInform's client, revoked with the work."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat

import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from pxed.db import credentials, machines
from pxed.db.schema import events, machine_credentials
from tests.helpers import (
    MAC,
    add_machine,
    enqueue,
    eventually,
    machine_events,
    machine_token,
    new_image,
)


async def live_credentials(server) -> int:
    def count(conn):
        return conn.execute(
            sa.select(sa.func.count())
            .select_from(machine_credentials)
            .where(machine_credentials.c.revoked_at.is_(None))
        ).scalar()

    return await server.db.run(count)


async def from_address(server, address: str, path: str, token: str) -> tuple[int, dict]:
    """GET *path* from another loopback address (the socket's peer is what
    pxed goes by, not a header)."""
    agent = Agent(reactor, bindAddress=(address, 0))
    headers = Headers({b"Authorization": [f"Bearer {token}".encode()]})
    response = await agent.request(b"GET", (server.url + path).encode(), headers)
    return response.code, json.loads(await readBody(response) or b"null")


async def queued(server) -> tuple[dict, str, dict]:
    """A machine with one image queued for it: machine, image, work."""
    machine = await add_machine(server)
    alice = await server.user("alice")
    disk = await new_image(alice)
    return machine, disk, await enqueue(alice, [{"UUID": disk}])


@pytest_twisted.ensureDeferred
async def test_one_credential_per_work_repeated_and_one_event(server):
    machine, disk, work = await queued(server)
    tokens = {await machine_token(server) for _ in range(60)}
    for _ in range(40):
        script = (await server.anonymous.get(f"/ipxe/{MAC}")).text
        tokens.add(script.split("pxed.token=")[1].split()[0])
    # 100 answers: one token, one live credential, one event counting them.
    assert len(tokens) == 1
    assert await live_credentials(server) == 1
    # Repeats are counted in memory and written every few moments.
    answers: list[dict] = []

    async def counted() -> bool:
        answers[:] = [e for e in await machine_events(server.admin) if e["Action"] == "boot.answer"]
        return len(answers) == 1 and answers[0]["Count"] == 100

    await eventually(counted)
    assert len(answers) == 1
    assert answers[0]["Detail"].startswith("management OS: machine has queued work; ")
    assert answers[0]["LastAt"] >= answers[0]["At"]

    (token,) = tokens
    cred = await server.db.run(credentials.thd_lookup, token)
    assert cred.work_id == work["ID"]
    assert cred.image_uuids == frozenset({machine["ImageUUID"], disk})

    # The token is not kept: the row has its hash and a nonce, and the key
    # it is derived with is the data dir's, readable by its owner only.
    def rows(conn):
        return conn.execute(sa.select(machine_credentials)).all()

    (row,) = await server.db.run(rows)
    assert token not in repr(tuple(row))
    key = server.config.data_dir / "machine.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


@pytest_twisted.ensureDeferred
async def test_scoped_and_revocable_under_the_always_policy(start_server):
    server = await start_server(boot_policy="always", base_url="http://pxed.test")
    m = await add_machine(server)
    first, second = await machine_token(server), await machine_token(server)
    assert first.startswith("pxm_") and first == second
    ipxe = (await server.anonymous.get(f"/ipxe/{MAC}")).text
    assert f"pxed.token={first}" in ipxe

    cred = await server.db.run(credentials.thd_lookup, first)
    assert cred.image_uuids == frozenset({m["ImageUUID"]})
    assert cred.work_id is None
    # A machine credential is not a user: user routes refuse it (403), and
    # once revoked it is no credential at all (401); the next answer has a
    # new one.
    machine = server.anonymous.bearer(first)
    assert (await machine.get("/machines")).code == 403
    await server.db.run(credentials.thd_revoke_all, cred.machine_id)
    assert (await machine.get("/machines")).code == 401
    assert await machine_token(server) != first


@pytest_twisted.ensureDeferred
async def test_expired_credential_refused(start_server):
    server = await start_server(boot_policy="always")
    await add_machine(server)
    token = await machine_token(server)

    def expire(conn):
        conn.execute(
            machine_credentials.update().values(
                expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            )
        )

    await server.db.run(expire)
    r = await server.anonymous.bearer(token).get("/machines")
    assert r.code == 401
    assert "expired" in r.json()["error"]
    assert await machine_token(server) != token


@pytest_twisted.ensureDeferred
async def test_bound_to_the_first_boot_inform_and_refused_elsewhere(server):
    _, disk, work = await queued(server)
    token = await machine_token(server)

    # The first BootInform (from 127.0.0.1) binds it.
    r = await server.anonymous.bearer(token).get(f"/machine/{MAC}/boot")
    assert r.code == 200, r.text
    assert r.json()["ID"] == work["ID"]
    # Replayed from another client: refused, whatever the route, and recorded.
    for path in (f"/machine/{MAC}/boot", f"/image/{disk}/0", f"/machine/{MAC}/image"):
        code, body = await from_address(server, "127.0.0.2", path, token)
        assert code == 403, (path, body)
        assert "bound to another client" in body["error"]
    # The bound client still may; the boot answer repeats the same token.
    assert (await server.anonymous.bearer(token).get(f"/machine/{MAC}/boot")).code == 200
    assert await machine_token(server) == token

    found = [
        (e["Action"], e["Detail"], e["Count"])
        for e in await machine_events(server.admin)
        if e["Action"].startswith("credential.")
    ]
    assert [(a, c) for a, _, c in found] == [("credential.bind", 1), ("credential.refused", 3)]
    assert found[0][1].endswith("bound to 127.0.0.1")
    assert "bound to 127.0.0.1 presented from 127.0.0.2" in found[1][1]


@pytest_twisted.ensureDeferred
async def test_a_credential_bound_elsewhere_cannot_boot_inform(server):
    await queued(server)
    token = await machine_token(server)
    code, _ = await from_address(server, "127.0.0.3", f"/machine/{MAC}/boot", token)
    assert code == 200
    r = await server.anonymous.bearer(token).get(f"/machine/{MAC}/boot")
    assert r.code == 403, r.text


@pytest_twisted.ensureDeferred
async def test_cancelling_the_work_revokes_its_credential_at_once(server):
    _, disk, work = await queued(server)
    token = await machine_token(server)
    agent = server.anonymous.bearer(token)
    assert (await agent.get(f"/machine/{MAC}/image")).code == 200
    r = await server.admin.delete(f"/machine/{MAC}/boot/queue/{work['ID']}")
    assert r.code == 200, r.text
    assert await live_credentials(server) == 0
    for path in (f"/machine/{MAC}/image", f"/image/{disk}/0", f"/machine/{MAC}/boot"):
        assert (await agent.get(path)).code == 401, path


@pytest_twisted.ensureDeferred
async def test_a_credential_never_outlives_its_work(server):
    """Even without a revocation the credential goes with the work's
    state: work that ended any way gives the token no access."""
    await queued(server)
    agent = server.anonymous.bearer(await machine_token(server))

    def end(conn):
        from pxed.db.schema import boot_setups

        conn.execute(boot_setups.update().values(state="failed"))

    await server.db.run(end)
    assert (await agent.get(f"/machine/{MAC}/image")).code == 401


@pytest_twisted.ensureDeferred
async def test_clients_outside_the_boot_networks_boot_locally(start_server):
    # Over loopback: a configuration that leaves loopback out.
    server = await start_server(boot_policy="always", boot_networks=["10.0.0.0/8", "fc00::/7"])
    await add_machine(server)
    r = await server.anonymous.get(f"/v1/boot/{MAC}")
    assert r.code == 404
    assert "not on a boot network" in r.json()["error"]
    script = (await server.anonymous.get(f"/ipxe/{MAC}")).text
    assert "\nexit\n" in script and "kernel" not in script and "pxm_" not in script
    assert await live_credentials(server) == 0
    (answer,) = [e for e in await machine_events(server.admin) if e["Action"] == "boot.answer"]
    assert answer["Detail"].startswith("local disk: client not on a boot network; ")
    assert "from 127.0.0.1" in answer["Detail"]
    # An unknown MAC from outside: the same answer.
    r = await server.anonymous.get("/v1/boot/52:54:00:00:00:01")
    assert r.code == 404 and "not on a boot network" in r.json()["error"]


@pytest_twisted.ensureDeferred
async def test_boot_networks_go_by_the_socket_peer(start_server):
    server = await start_server(boot_policy="always", boot_networks=["127.0.0.2/32"])
    await add_machine(server)
    assert (await server.anonymous.get(f"/v1/boot/{MAC}")).code == 404
    agent = Agent(reactor, bindAddress=("127.0.0.2", 0))
    response = await agent.request(b"GET", f"{server.url}/v1/boot/{MAC}".encode())
    body = json.loads(await readBody(response))
    assert response.code == 200, body
    assert "pxed.token=pxm_" in body["cmdline"]


@pytest_twisted.ensureDeferred
async def test_the_events_view_goes_by_time_not_count(server):
    await add_machine(server)
    machine_id = (await server.db.run(machines.thd_get, MAC)).id
    now = dt.datetime.now(dt.UTC)

    def history(conn):
        def event(at, action, detail):
            return {
                "at": at,
                "actor": "system",
                "action": action,
                "target_type": "machine",
                "target": str(machine_id),
                "detail": detail,
            }

        old = [
            event(now - dt.timedelta(days=8, seconds=-i), "test.old", f"old {i}") for i in range(3)
        ]
        early = [event(now - dt.timedelta(days=2), "test.early", "two days ago")]
        busy = [event(now - dt.timedelta(minutes=5), "test.busy", str(i)) for i in range(600)]
        conn.execute(events.insert(), old + early + busy)

    await server.db.run(history)
    # A busy hour does not push out the rest of the week; older is left out.
    recent = [e["Action"] for e in await machine_events(server.admin)]
    assert recent.count("test.busy") == 600
    assert "test.early" in recent
    assert "test.old" not in recent
    since = (now - dt.timedelta(days=9)).isoformat()
    r = await server.admin.get(f"/machine/{MAC}/events?since={since.replace('+', '%2B')}")
    assert r.code == 200, r.text
    assert [e["Detail"] for e in r.json() if e["Action"] == "test.old"] == [
        "old 2",
        "old 1",
        "old 0",
    ]
    r = await server.admin.get(f"/machine/{MAC}/events?since=yesterday")
    assert r.code == 400
    assert "since" in r.json()["error"]
