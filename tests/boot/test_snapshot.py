"""The boot view's snapshot (pxed.boot.snapshot): the entries of some
machines, loaded alone and put in a whole snapshot, make the snapshot a
whole load would, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest_twisted

from pxed.boot.key import machine_key
from pxed.boot.snapshot import thd_load
from tests.helpers import add_machine, enqueue, new_image


def mac(i: int) -> str:
    return f"52:54:00:00:01:{i:02x}"


@pytest_twisted.ensureDeferred
async def test_the_machines_a_queueing_concerns_loaded_alone_make_the_whole_view(
    start_server, database
):
    server = await start_server()
    for i in range(6):
        await add_machine(server, mac(i), name=f"m{i}")
    alice = await server.user("alice")
    disk = await new_image(alice)
    # One machine has work before, and keeps it.
    await enqueue(alice, [{"UUID": disk}], mac(5), name="before")
    db, key = server.db, machine_key(server.config.data_dir)
    before = await db.read(thd_load, key)
    assert before.by_mac[mac(5)].work is not None

    works = [await enqueue(alice, [{"UUID": disk}], mac(i), name=f"s{i}") for i in (1, 3)]
    ids = {before.by_mac[mac(i)].machine.id for i in (1, 3)}
    part = await db.read(thd_load, key, ids)
    assert set(part.by_mac) == {mac(1), mac(3)}
    merged = before.updated(part, ids)
    whole = await db.read(thd_load, key)
    assert merged == whole
    assert [merged.by_mac[mac(i)].work_id for i in (1, 3)] == [w["ID"] for w in works]
    assert merged.by_mac[mac(0)].work is None
    # Their credentials were minted with the work (pxed.boot.credentials).
    assert {(m, w) for (m, w) in merged.tokens if m in ids} == {
        (merged.by_mac[mac(i)].machine.id, merged.by_mac[mac(i)].work_id) for i in (1, 3)
    }
