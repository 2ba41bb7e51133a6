"""The boot answers come from memory (pxed.bootview): they keep coming
while the database is busy, they see every change made before they were
asked, and with PostgreSQL a change made through another server too."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList

from pxed.db.schema import boot_setups
from tests.helpers import (
    MAC,
    Response,
    add_machine,
    enqueue,
    eventually,
    new_image,
    queued,
)


def block_pools(server) -> tuple[threading.Event, list]:
    """Occupy every database thread of *server* until the event is set."""
    release = threading.Event()

    def wait(_conn: sa.Connection) -> None:
        release.wait(30)

    db = server.db
    busy = [db.run(wait) for _ in range(db._threadpool.max)]
    busy += [db.read(wait) for _ in range(db._read_threadpool.max)]
    return release, busy


@pytest_twisted.ensureDeferred
async def test_answers_keep_coming_while_every_database_thread_is_busy(server):
    await queued(server)
    # The first answer mints the work's credential (a write).
    first = (await server.anonymous.get(f"/ipxe/{MAC}")).text
    assert "pxed.token=" in first
    release, busy = block_pools(server)
    try:

        async def get(path: str) -> Response:
            # Seconds, where an answer that needed a thread would never come.
            d = Deferred.fromCoroutine(server.anonymous.get(path))
            return await d.addTimeout(5, reactor)

        for path in (f"/ipxe/{MAC}", f"/v1/boot/{MAC}", "/ipxe", "/v1/boot/52:54:00:00:00:99"):
            for _ in range(20):
                r = await get(path)
                assert r.code in (200, 404), r.text
        assert (await get(f"/ipxe/{MAC}")).text == first
        token = first.split("pxed.token=")[1].split()[0]
        assert (await get(f"/v1/boot/{MAC}")).json()["cmdline"].endswith(token)
    finally:
        release.set()
        await DeferredList(busy)


@pytest_twisted.ensureDeferred
async def test_from_memory_and_through_the_router_the_same_answer(server):
    """A percent-encoded MAC goes past the in-memory front to the routes:
    both must say the same, byte for byte."""
    await add_machine(server, mac="52:54:00:aa:bb:cc", name="idle")
    await queued(server)
    for mac in (MAC, "52:54:00:aa:bb:cc", "52:54:00:00:00:99", "not-a-mac"):
        for prefix in ("/ipxe/", "/v1/boot/"):
            fast = await server.anonymous.raw(b"GET", (prefix + mac).encode())
            escaped = mac.replace(":", "%3A").replace("-", "%2D")
            routed = await server.anonymous.raw(b"GET", (prefix + escaped).encode())
            assert fast.code == routed.code, (prefix, mac)
            assert fast.body == routed.body, (prefix, mac)
            assert fast.header("content-type") == routed.header("content-type")


@pytest_twisted.ensureDeferred
async def test_a_change_is_in_the_next_answer(server):
    await add_machine(server)
    alice = await server.user("alice")
    disk = await new_image(alice)
    for _ in range(5):
        work = await enqueue(alice, [{"UUID": disk}])
        assert "\nkernel " in (await server.anonymous.get(f"/ipxe/{MAC}")).text
        r = await alice.delete(f"/machine/{MAC}/boot/queue/{work['ID']}")
        assert r.code == 200, r.text
        assert "\nexit\n" in (await server.anonymous.get(f"/ipxe/{MAC}")).text
    r = await server.admin.put(f"/machine/{MAC}", {"Managed": False})
    assert r.code == 200, r.text
    assert "not managed" in (await server.anonymous.get(f"/ipxe/{MAC}")).text


@pytest_twisted.ensureDeferred
async def test_an_edit_outside_pxed_is_seen_at_the_next_refresh(start_server):
    server = await start_server(boot_view_refresh=0.3)
    work = await queued(server)
    assert "\nkernel " in (await server.anonymous.get(f"/ipxe/{MAC}")).text

    def cancel_by_hand(conn: sa.Connection) -> None:
        # As an operator's SQL would: no pxed code path, so nobody is told.
        conn.execute(
            boot_setups.update().where(boot_setups.c.id == work["ID"]).values(state="cancelled")
        )

    engine = sa.create_engine(server.config.database_url)
    try:
        with engine.begin() as conn:
            cancel_by_hand(conn)
    finally:
        engine.dispose()

    async def local() -> bool:
        return "\nexit\n" in (await server.anonymous.get(f"/ipxe/{MAC}")).text

    await eventually(local, timeout=5)


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_a_change_made_through_another_server_is_heard(start_server):
    """Two pxed on one PostgreSQL database: work queued through one is in
    the other's next answers at once (NOTIFY), not at its next refresh."""
    one = await start_server(boot_view_refresh=3600)
    other = await start_server(
        boot_view_refresh=3600, database=one.config.database, data_dir=str(one.config.data_dir)
    )
    work = await queued(one)

    async def served() -> bool:
        return "\nkernel " in (await other.anonymous.get(f"/ipxe/{MAC}")).text

    await eventually(served, timeout=5)
    # The credential is the one the first server minted.
    token = (await one.anonymous.get(f"/ipxe/{MAC}")).text.split("pxed.token=")[1].split()[0]
    assert f"pxed.token={token}" in (await other.anonymous.get(f"/ipxe/{MAC}")).text
    r = await one.admin.delete(f"/machine/{MAC}/boot/queue/{work['ID']}")
    assert r.code == 200, r.text

    async def local() -> bool:
        return "\nexit\n" in (await other.anonymous.get(f"/ipxe/{MAC}")).text

    await eventually(local, timeout=5)
