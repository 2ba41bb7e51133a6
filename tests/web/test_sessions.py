"""Browser sessions started with an API token (POST /user/session), and
the CSRF token every request of theirs that changes something carries."""

from __future__ import annotations

import os

import pytest_twisted

from tests.helpers import (
    MIB,
    OCTETS,
    Client,
    machine_client,
    new_image,
    queued,
)

CSRF_REFUSED = "CSRF token missing or wrong"


def cookies(r) -> dict[str, str]:
    """name -> the whole Set-Cookie header."""
    return {h.split("=", 1)[0]: h for h in r.headers.getRawHeaders("set-cookie", [])}


async def signed_in_browser(server) -> tuple[Client, str]:
    """A browser signed in with the admin's token: it sends its cookies and
    nothing else; the CSRF token its page got."""
    r = await server.admin.post("/user/session")
    assert r.code == 200, r.text
    set_ = cookies(r)
    session = set_["session-name"].split(";")[0].split("=", 1)[1]
    csrf = set_["pxed-csrf"].split(";")[0].split("=", 1)[1]
    assert csrf == r.json()["CSRF"]
    browser = server.anonymous.with_headers(Cookie=f"session-name={session}; pxed-csrf={csrf}")
    return browser, csrf


@pytest_twisted.ensureDeferred
async def test_a_token_starts_a_session_with_its_cookies(server):
    r = await server.admin.post("/user/session")
    assert r.code == 200, r.text
    assert r.json()["User"]["Username"] == "admin"
    set_ = cookies(r)
    session, csrf = set_["session-name"].lower(), set_["pxed-csrf"].lower()
    # The session only HTTP can read; the CSRF token the page's script reads.
    assert "httponly" in session and "samesite=lax" in session and "path=/" in session
    assert "httponly" not in csrf and "samesite=strict" in csrf and "path=/" in csrf
    browser, token = await signed_in_browser(server)
    me = await browser.get("/user/me")
    assert me.code == 200 and me.json()["Username"] == "admin" and me.json()["CSRF"] == token
    # With a bearer token /user/me says no CSRF: there is no session.
    assert "CSRF" not in (await server.admin.get("/user/me")).json()
    r = await server.admin.get("/events?target_type=user&target=admin")
    assert ("user.login", "token") in {(e["Action"], e["Detail"]) for e in r.json()}


@pytest_twisted.ensureDeferred
async def test_a_change_from_a_session_needs_the_csrf_token(server):
    browser, csrf = await signed_in_browser(server)
    before = (await browser.get("/user/admin/images")).json()
    for headers in ({}, {"X-CSRF-Token": "pxc_forged"}, {"X-CSRF-Token": ""}):
        r = await browser.post("/image", {"Name": "x", "Size": MIB}, headers=headers)
        assert r.code == 403, r.text
        assert CSRF_REFUSED in r.json()["error"]
    # Refused, nothing made.
    assert (await browser.get("/user/admin/images")).json() == before
    r = await browser.post("/image", {"Name": "x", "Size": MIB}, headers={"X-CSRF-Token": csrf})
    assert r.code == 201, r.text
    # Another session's token is not this one's.
    _, other = await signed_in_browser(server)
    r = await browser.delete(f"/image/{r.json()['UUID']}", headers={"X-CSRF-Token": other})
    assert r.code == 403
    # API tokens are not sent by browsers on their own: no CSRF token needed.
    assert (await server.admin.post("/image", {"Name": "y", "Size": MIB})).code == 201


@pytest_twisted.ensureDeferred
async def test_an_upload_from_a_session_needs_it_too(server):
    browser, csrf = await signed_in_browser(server)
    image = await new_image(browser.with_headers(**{"X-CSRF-Token": csrf}))
    data = os.urandom(2 * MIB)
    r = await browser.request("POST", f"/image/{image}", data=data, headers=OCTETS)
    assert r.code == 403 and CSRF_REFUSED in r.json()["error"]
    # (Refused before its body is read: tests/web/test_limits.py.)
    assert os.listdir(server.config.data_dir / "images" / ".staging") == []
    r = await browser.request(
        "POST", f"/image/{image}", data=data, headers={**OCTETS, "X-CSRF-Token": csrf}
    )
    assert r.code == 200, r.text


@pytest_twisted.ensureDeferred
async def test_only_an_api_token_starts_a_session(server):
    browser, csrf = await signed_in_browser(server)
    r = await browser.post("/user/session", headers={"X-CSRF-Token": csrf})
    assert r.code == 400 and "Bearer" in r.json()["error"]
    assert (await server.anonymous.post("/user/session")).code == 401
    await queued(server)
    mgmtos = await machine_client(server)
    assert (await mgmtos.post("/user/session")).code == 403


@pytest_twisted.ensureDeferred
async def test_signing_out_needs_the_token_and_ends_the_session(server):
    browser, csrf = await signed_in_browser(server)
    assert (await browser.post("/user/logout")).code == 403
    assert (await browser.get("/user/me")).code == 200
    r = await browser.post("/user/logout", headers={"X-CSRF-Token": csrf})
    assert r.code == 200
    assert cookies(r)["pxed-csrf"].startswith("pxed-csrf=;")
    assert (await browser.get("/user/me")).code == 401
