"""Users, API tokens and sessions."""

from __future__ import annotations

import datetime as dt

import pytest_twisted
from twisted.internet import defer

from pxed.db import tokens
from pxed.db.schema import sessions
from pxed.web.auth import csrf_token


@pytest_twisted.ensureDeferred
async def test_bootstrap_admin_token_file(server):
    path = server.config.data_dir / "admin.token"
    assert path.stat().st_mode & 0o777 == 0o600
    r = await server.admin.get("/user/me")
    assert r.code == 200
    assert (r.json()["Username"], r.json()["Role"]) == ("admin", "admin")


@pytest_twisted.ensureDeferred
async def test_create_list_get_update_delete(server):
    admin = server.admin
    # The original answered a text; asked for JSON, pxed answers the user.
    r = await admin.post("/user", {"Username": "alice", "Name": "Alice A", "Email": "a@x.org"})
    assert r.code == 201, r.text
    assert r.text.strip() == "Successfully created user"
    assert (await admin.get("/user/alice")).json()["Role"] == "user"
    # The original named users by Name; a valid name stands in for Username
    # (and roles are case-insensitive, "Moderator" as its tests wrote them).
    r = await admin.post(
        "/user",
        {"name": "bob", "email": "b@x.org", "role": "Moderator"},
        headers={"Accept": "application/json"},
    )
    assert r.code == 201, r.text
    assert (r.json()["Username"], r.json()["Role"]) == ("bob", "moderator")
    names = [u["Username"] for u in (await admin.get("/users")).json()]
    assert names == ["admin", "alice", "bob"]

    r = await admin.put("/user/alice", {"Name": "Alice B"})
    assert r.json()["Name"] == "Alice B"
    assert (await admin.get("/user/alice")).json()["Name"] == "Alice B"
    r = await admin.delete("/user/alice")
    assert r.code == 200 and r.text.strip() == "Successfully deleted user"
    assert (await admin.get("/user/alice")).code == 404


@pytest_twisted.ensureDeferred
async def test_validation_errors_name_the_field(server):
    admin = server.admin
    for body, field in [
        ({"Username": "Has Space"}, "Username"),
        ({"Username": "me"}, "Username"),
        ({}, "Username"),
        ({"Username": "carol", "Role": "root"}, "Role"),
        ({"Username": "carol", "Email": "nope"}, "Email"),
        ({"Username": "carol", "Name": 7}, "Name"),
    ]:
        r = await admin.post("/user", body)
        assert r.code == 400, body
        assert r.json()["error"].startswith(field), r.json()
    assert (await admin.post("/user", {"Username": "admin"})).code == 409
    assert [u["Username"] for u in (await admin.get("/users")).json()] == ["admin"]


@pytest_twisted.ensureDeferred
async def test_roles_only_admin_changes_them(server):
    alice = await server.user("alice")
    mod = await server.user("mod", "moderator")
    r = await alice.put("/user/alice", {"Role": "admin"})
    assert r.code == 403
    r = await mod.put("/user/alice", {"Role": "moderator"})
    assert r.code == 403
    r = await alice.put("/user/alice", {"Name": "Alice"})
    assert r.code == 200
    r = await mod.put("/user/alice", {"Email": "new@x.org"})
    assert r.code == 200
    # Moderators do not manage admins.
    assert (await mod.put("/user/admin", {"Name": "x"})).code == 403
    assert (await mod.delete("/user/admin")).code == 403
    r = await server.admin.put("/user/alice", {"Role": "moderator"})
    assert r.json()["Role"] == "moderator"
    assert (await alice.get("/users")).code == 200


@pytest_twisted.ensureDeferred
async def test_last_admin_cannot_be_removed_or_demoted(server):
    admin = server.admin
    r = await admin.put("/user/admin", {"Role": "user"})
    assert r.code == 409
    r = await admin.delete("/user/admin")
    assert r.code == 409
    assert (await admin.get("/user/me")).json()["Role"] == "admin"
    await server.user("second", "admin")
    assert (await admin.put("/user/admin", {"Role": "user"})).code == 200


@pytest_twisted.ensureDeferred
async def test_tokens_shown_once_listed_without_secret_and_revocable(server):
    alice = await server.user("alice")
    r = await alice.post("/user/alice/tokens", {"Name": "laptop", "ExpiresInDays": 30})
    assert r.code == 201
    created = r.json()
    token = created["Token"]
    assert token.startswith("pxu_") and len(token) > 40
    assert r.header("cache-control") == "no-store"

    listed = (await alice.get("/user/alice/tokens")).json()
    assert [t["Name"] for t in listed] == ["test", "laptop"]
    assert all("Token" not in t for t in listed)
    assert token not in (await alice.get("/user/alice/tokens")).text

    laptop = server.anonymous.bearer(token)
    assert (await laptop.get("/user/me")).json()["Username"] == "alice"
    r = await alice.delete(f"/user/alice/tokens/{created['ID']}")
    assert r.code == 200
    r = await laptop.get("/user/me")
    assert r.code == 401
    assert "revoked" in r.json()["error"]


@pytest_twisted.ensureDeferred
async def test_expired_token_refused(server):
    alice = await server.user("alice")
    r = await alice.post("/user/alice/tokens", {"Name": "old", "ExpiresInDays": 1})
    token = r.json()["Token"]

    def expire(conn):
        from pxed.db.schema import api_tokens

        conn.execute(
            api_tokens.update()
            .where(api_tokens.c.id == r.json()["ID"])
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )

    await server.db.run(expire)
    assert (await server.anonymous.bearer(token).get("/user/me")).code == 401


@pytest_twisted.ensureDeferred
async def test_session_cookie_works_until_it_expires_or_logs_out(server):
    await server.user("alice")
    sid = await server.db.run(tokens.thd_create_session, "alice", dt.timedelta(hours=8))
    browser = server.anonymous.with_headers(Cookie=f"session-name={sid}")
    assert (await browser.get("/user/me")).json()["Username"] == "alice"

    def expire(conn):
        conn.execute(
            sessions.update().values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )

    await server.db.run(expire)
    r = await browser.get("/user/me")
    assert r.code == 401
    assert "expired" in r.json()["error"]

    sid = await server.db.run(tokens.thd_create_session, "alice", dt.timedelta(hours=8))
    browser = server.anonymous.with_headers(
        Cookie=f"session-name={sid}", **{"X-CSRF-Token": csrf_token(sid)}
    )
    r = await browser.post("/user/logout")
    assert r.code == 200
    cookie = r.header("set-cookie")
    assert cookie.startswith("session-name=;") and "HttpOnly" in cookie
    assert (await browser.get("/user/me")).code == 401


@pytest_twisted.ensureDeferred
async def test_credentials_are_stored_hashed(server):
    alice = await server.user("alice")
    token = (await alice.post("/user/alice/tokens", {"Name": "x"})).json()["Token"]
    sid = await server.db.run(tokens.thd_create_session, "alice", dt.timedelta(hours=1))

    def dump(conn):
        out = []
        for table in ("api_tokens", "sessions"):
            out += [str(tuple(r)) for r in conn.exec_driver_sql(f"SELECT * FROM {table}")]  # noqa: S608
        return "\n".join(out)

    stored = await server.db.run(dump)
    assert token not in stored and token[4:] not in stored
    assert sid not in stored


@pytest_twisted.ensureDeferred
async def test_audit_events_for_users_and_tokens(server):
    alice = await server.user("alice")
    await alice.put("/user/alice", {"Name": "A"})
    r = await server.admin.get("/events?target_type=user&target=alice")
    assert r.code == 200
    actions = [e["Action"] for e in r.json()]
    assert actions == ["user.update", "token.create", "user.create"]
    assert r.json()[0]["Actor"] == "alice"
    assert (await alice.get("/events")).code == 403
    assert (await server.admin.get("/events?limit=x")).code == 400


@pytest_twisted.ensureDeferred
async def test_concurrent_creations_of_one_user_are_one_201_and_409s(server):
    # On PostgreSQL these run on several writer threads at once.
    for round_ in range(3):
        body = {"Username": f"u{round_}", "Email": "u@example.org"}
        answers = await defer.gatherResults(
            [defer.ensureDeferred(server.admin.post("/user", body)) for _ in range(8)]
        )
        assert sorted(r.code for r in answers) == [201] + [409] * 7
