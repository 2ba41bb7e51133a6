"""Machine credentials: minted into the boot cmdline, scoped, expiring,
revocable."""

from __future__ import annotations

import datetime as dt

import pytest_twisted

from pxed.db import credentials
from pxed.db.schema import machine_credentials
from tests.helpers import MAC, add_machine, machine_token


@pytest_twisted.ensureDeferred
async def test_minted_per_answer_scoped_and_revocable(start_server):
    server = await start_server(boot_policy="always", base_url="http://pxed.test")
    m = await add_machine(server)
    first, second = await machine_token(server), await machine_token(server)
    assert first.startswith("pxm_") and first != second
    ipxe = (await server.anonymous.get(f"/ipxe/{MAC}")).text
    assert "pxed.token=pxm_" in ipxe

    cred = await server.db.run(credentials.thd_lookup, first)
    assert cred.image_uuids == frozenset({m["ImageUUID"]})
    # A machine credential is not a user: user routes refuse it (403), and
    # once revoked it is no credential at all (401).
    machine = server.anonymous.bearer(first)
    assert (await machine.get("/machines")).code == 403
    await server.db.run(credentials.thd_revoke_all, cred.machine_id)
    assert (await machine.get("/machines")).code == 401
    assert (await server.anonymous.bearer(second).get("/machines")).code == 401


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
