"""GET /events/stream: what happens, live, to each caller only what they
may see."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted

from pxed.db import builds
from tests.helpers import (
    MAC,
    MIB,
    OTHER_MAC,
    EventSource,
    add_machine,
    enqueue,
    eventually,
    machine_client,
    new_image,
    queued,
    upload_version,
)
from tests.web.test_metrics import scrape, value


@pytest_twisted.ensureDeferred
async def test_a_deploy_is_followed_live_from_queue_to_done(server):
    await add_machine(server)
    alice = await server.user("alice")
    image = await new_image(alice, "a")
    await upload_version(alice, image, b"a" * 2 * MIB)
    source = await EventSource.open(server.admin)
    assert source.code == 200
    assert source.headers.getRawHeaders(b"content-type")[0].startswith(b"text/event-stream")

    await enqueue(alice, [{"UUID": image, "Version": 1}])
    queued = await source.until("event", lambda e: e["Action"] == "queue.add")
    assert (queued["MAC"], queued["TargetType"], queued["Actor"]) == (MAC, "machine", "alice")
    progress = await source.until("progress", lambda p: p["MAC"] == MAC)
    assert progress["Progress"]["Step"] == "queued"

    mgmtos = await machine_client(server)
    assert (await mgmtos.get(f"/machine/{MAC}/boot")).code == 200
    await source.until("event", lambda e: e["Action"] == "queue.start")
    r = await mgmtos.post("/log", {"Level": "info", "Message": "writing /dev/vda"})
    assert r.code == 200, r.text
    line = await source.until("log")
    assert (line["MAC"], line["Message"], line["Level"]) == (MAC, "writing /dev/vda", "info")
    body = {"Image": image, "Written": MIB, "Total": 2 * MIB}
    assert (await mgmtos.post(f"/machine/{MAC}/progress", body)).code == 200
    half = await source.until(
        "progress", lambda p: p["Progress"] is not None and p["Progress"]["Percent"] == 50
    )
    assert half["Progress"]["Step"] == "writing image 1 of 1"
    r = await mgmtos.post(f"/machine/{MAC}/boot/complete", {"Success": True})
    assert r.code == 200, r.text
    await source.until("event", lambda e: e["Action"] == "queue.done")
    # The work ended: the machine has none now.
    assert (await source.until("progress"))["Progress"] is None
    source.close()


@pytest_twisted.ensureDeferred
async def test_each_caller_sees_only_what_they_may(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    streams = {
        "alice": await EventSource.open(alice),
        "bob": await EventSource.open(bob),
        "admin": await EventSource.open(server.admin),
    }
    secret = await new_image(alice, "alices")
    own = await new_image(bob, "bobs")
    await add_machine(server)

    async def images_seen(name: str) -> list[str]:
        # Everything up to the machine's creation, which all of them see.
        seen = []
        while True:
            kind, data = await streams[name].next()
            if kind == "event" and data["TargetType"] == "machine":
                assert data["Action"] == "machine.create" and data["MAC"] == MAC
                return seen
            if kind == "event":
                seen.append(data["Target"])

    assert await images_seen("alice") == [secret]
    assert await images_seen("bob") == [own]
    assert await images_seen("admin") == [secret, own]
    for source in streams.values():
        source.close()


@pytest_twisted.ensureDeferred
async def test_machine_narrows_the_stream_to_that_machine(server):
    await add_machine(server, MAC, "one")
    await add_machine(server, OTHER_MAC, "two")
    source = await EventSource.open(server.admin, f"machine={OTHER_MAC}")
    assert source.code == 200
    for mac in (MAC, OTHER_MAC):
        r = await server.admin.put(f"/machine/{mac}", {"Managed": False})
        assert r.code == 200, r.text
    seen = await source.until("event")
    assert seen["MAC"] == OTHER_MAC
    missing = await EventSource.open(server.admin, "machine=52:54:00:00:00:99")
    assert missing.code == 404
    source.close()


@pytest_twisted.ensureDeferred
async def test_a_build_log_to_its_owner_only(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    image = await new_image(alice)
    build = await server.db.run(
        builds.thd_create, image, "alice", "disk", "FROM scratch\n", False, "alice", "elsewhere"
    )
    await server.db.run(builds.thd_append_log, build.id, 0, "Step 1/1 : FROM scratch")
    refused = await EventSource.open(bob, f"build={build.id}")
    assert refused.code == 403, refused.body
    source = await EventSource.open(alice, f"build={build.id}")
    first = await source.until("build-log")
    assert first == {"Build": build.id, "Lines": ["Step 1/1 : FROM scratch"]}
    await server.db.run(builds.thd_append_log, build.id, 1, "exporting")
    assert (await source.until("build-log"))["Lines"] == ["exporting"]
    assert (await EventSource.open(alice, "build=99999")).code == 404
    source.close()


@pytest_twisted.ensureDeferred
async def test_no_credential_bad_parameters_and_a_bound_on_streams(start_server):
    server = await start_server(max_event_streams=2)
    nobody = await EventSource.open(server.anonymous)
    assert nobody.code == 401
    bad = await EventSource.open(server.admin, "everything=1")
    assert bad.code == 400 and b"everything" in bad.body
    open_ = [await EventSource.open(server.admin) for _ in range(2)]
    assert [s.code for s in open_] == [200, 200]
    assert value(await scrape(server.admin), "pxed_event_streams") == 2
    full = await EventSource.open(server.admin)
    assert full.code == 503 and b"max_event_streams" in full.body
    open_[0].close()
    await open_[0].ended
    # The place is given back once that client is gone.
    for _ in range(50):
        again = await EventSource.open(server.admin)
        if again.code == 200:
            break
    assert again.code == 200
    again.close()
    open_[1].close()


@pytest_twisted.ensureDeferred
async def test_a_revoked_token_ends_its_stream(start_server):
    server = await start_server(event_stream_keepalive=0.2)
    r = await server.admin.post("/user/admin/tokens", {"Name": "watcher"})
    assert r.code == 201, r.text
    token = r.json()
    source = await EventSource.open(server.anonymous.bearer(token["Token"]))
    assert await source.next() == (":", "keepalive")
    r = await server.admin.delete(f"/user/admin/tokens/{token['ID']}")
    assert r.code == 200, r.text
    # Ended by the server at its next check.
    await source.ended


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_what_another_server_does_is_streamed_at_once(start_server):
    """Two pxed on one PostgreSQL database: a stream on one hears what the
    other writes through NOTIFY, well before its 5 s safety poll."""
    one = await start_server()
    other = await start_server(database=one.config.database, data_dir=str(one.config.data_dir))
    source = await EventSource.open(one.admin)
    assert source.code == 200
    await add_machine(other)
    created = await source.until("event", lambda e: e["Action"] == "machine.create", timeout=3)
    assert created["MAC"] == MAC
    source.close()


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_is_cut_off(start_server):
    """Events pile up for a stream whose client reads nothing: once the
    socket's buffers are full and event_stream_backlog bytes wait, the
    server closes it instead of holding more."""
    server = await start_server(event_stream_backlog=64 * 1024)
    await queued(server)
    mgmtos = await machine_client(server)
    token = server.admin.headers["Authorization"]
    port = int(server.url.rsplit(":", 1)[1])
    reader = socket.socket()
    # A small window: the server's writes stay in its own buffers.
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", port))
    reader.sendall(
        f"GET /events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\r\n".encode()
    )
    await eventually(lambda: server.pxed.feed.streams == 1)
    line = "x" * 16000
    try:
        for _ in range(1000):  # at most 16 MB of log lines
            r = await mgmtos.post("/log", {"Message": line})
            assert r.code == 200, r.text
            if server.pxed.feed.streams == 0:
                break
        await eventually(lambda: server.pxed.feed.streams == 0, timeout=15)
        # A reader that is not slow is still served.
        source = await EventSource.open(server.admin)
        assert (await mgmtos.post("/log", {"Message": "after"})).code == 200
        assert (await source.until("log", lambda x: x["Message"] == "after"))["MAC"] == MAC
        source.close()
    finally:
        reader.close()
