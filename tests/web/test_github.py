"""GitHub sign-in, driven end to end over real HTTP: a browser stand-in
(redirects followed and cookies carried by hand) between pxed and a GitHub
stand-in on loopback."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory

from tests.helpers import Response
from tests.web.github_standin import Account, GitHubStandIn

CLIENT_ID = "Iv1.0123456789abcdef"
CLIENT_SECRET = "f00dfeedc0ffee0123456789abcdef0123456789"
LOGIN = "/user/login/github"
CALLBACK = LOGIN + "/callback"


# -- a browser, by hand ------------------------------------------------------


@dataclass
class SetCookie:
    value: str
    attrs: dict[str, str | bool]

    @classmethod
    def parse(cls, header: str) -> tuple[str, SetCookie]:
        first, *rest = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        attrs: dict[str, str | bool] = {}
        for part in rest:
            key, eq, val = part.partition("=")
            attrs[key.lower()] = val if eq else True
        return name, cls(value, attrs)

    @property
    def path(self) -> str:
        return str(self.attrs.get("path", "/"))

    @property
    def expired(self) -> bool:
        return not self.value or self.attrs.get("max-age") == "0"


@dataclass
class Browser:
    """Sends the cookies a browser would (by path; hosts are all 127.0.0.1)
    and follows nothing by itself."""

    jar: dict[str, SetCookie] = field(default_factory=dict)
    # Every Set-Cookie of the last response, by name.
    set_cookies: dict[str, SetCookie] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)

    def cookie(self, name: str) -> str | None:
        found = self.jar.get(name)
        return None if found is None else found.value

    async def request(self, method: str, url: str, headers: dict[str, str] | None = None):
        path = urlsplit(url).path or "/"
        sent = [
            f"{name}={c.value}"
            for name, c in self.jar.items()
            if path == c.path or path.startswith(c.path.rstrip("/") + "/")
        ]
        all_headers = dict(headers or {})
        if sent:
            all_headers["Cookie"] = "; ".join(sent)
        response = await treq.request(
            method,
            url,
            headers={k: [v] for k, v in all_headers.items()},
            allow_redirects=False,
            persistent=False,
        )
        body = await treq.content(response)
        self.bodies.append(body)
        self.set_cookies = {}
        for header in response.headers.getRawHeaders("set-cookie", []):
            name, cookie = SetCookie.parse(header)
            self.set_cookies[name] = cookie
            if cookie.expired:
                self.jar.pop(name, None)
            else:
                self.jar[name] = cookie
        return Response(response.code, response.headers, body)

    def get(self, url: str, **kw: Any):
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any):
        return self.request("POST", url, **kw)


# -- fixtures ----------------------------------------------------------------


def github_config(standin: GitHubStandIn, **changes: str) -> str:
    """The [github] table of a config file pointing pxed at *standin*."""
    settings = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "url": standin.url,
        "api_url": standin.url,
        **changes,
    }
    return "[github]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())


@pytest_twisted.async_yield_fixture
async def github():
    standin = await GitHubStandIn(CLIENT_ID, CLIENT_SECRET).start()
    yield standin
    await standin.stop()


@pytest_twisted.async_fixture
async def pxed(start_server, github):
    return await start_server(github_config(github))


async def start_sign_in(server, github: GitHubStandIn, browser: Browser) -> str:
    """Up to GitHub sending the browser back: the callback URL."""
    r = await browser.get(server.url + LOGIN)
    assert r.code == 302, r.text
    location = r.header("location")
    assert location.startswith(github.url + "/login/oauth/authorize?")
    query = parse_qs(urlsplit(location).query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [server.url + CALLBACK]
    assert query["scope"] == ["read:user user:email"]
    state = query["state"][0]
    assert len(state) >= 32
    assert browser.cookie("pxed-oauth-state") == state

    r = await browser.get(location)
    assert r.code == 302, r.text
    callback = r.header("location")
    assert callback.startswith(server.url + CALLBACK + "?")
    assert parse_qs(urlsplit(callback).query)["state"] == [state]
    return callback


async def sign_in(server, github: GitHubStandIn, browser: Browser | None = None) -> Browser:
    """The whole flow; the browser comes back signed in."""
    browser = browser or Browser()
    callback = await start_sign_in(server, github, browser)
    r = await browser.get(callback)
    assert r.code == 302, r.text
    assert browser.cookie("session-name")
    return browser


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def usernames(server) -> list[str]:
    r = await server.admin.get("/users")
    assert r.code == 200, r.text
    return [u["Username"] for u in r.json()]


async def me(server, browser: Browser) -> Response:
    return await browser.get(server.url + "/user/me")


# -- the happy path ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sign_in_creates_user_and_session(pxed, github):
    browser = Browser()
    r = await browser.get(pxed.url + LOGIN)
    assert r.code == 302
    assert r.header("cache-control") == "no-store"
    state = browser.set_cookies["pxed-oauth-state"]
    assert state.attrs["httponly"] is True
    assert str(state.attrs["samesite"]).lower() == "lax"
    assert state.attrs["path"] == LOGIN
    assert state.attrs["max-age"] == "600"
    assert "secure" not in state.attrs  # plain http on loopback

    browser = Browser()
    callback = await start_sign_in(pxed, github, browser)
    r = await browser.get(callback)
    assert r.code == 302, r.text
    assert r.header("location") == "/"
    session = browser.set_cookies["session-name"]
    assert session.value
    assert session.attrs["httponly"] is True
    assert str(session.attrs["samesite"]).lower() == "lax"
    assert session.attrs["path"] == "/"
    # The state is spent.
    assert browser.set_cookies["pxed-oauth-state"].expired
    assert browser.cookie("pxed-oauth-state") is None

    r = await me(pxed, browser)
    assert r.code == 200, r.text
    user = r.json()
    assert user["Username"] == "octocat"
    assert user["Role"] == "user"
    assert user["Name"] == "The Octocat"
    assert user["Email"] == "octocat@example.org"
    assert user["GitHub"] is True

    # The code was exchanged with the secret and the callback as redirect_uri;
    # the public e-mail made /user/emails unnecessary.
    assert github.called("POST", "/login/oauth/access_token")
    assert github.called("GET", "/user")
    assert not github.called("GET", "/user/emails")


@pytest_twisted.ensureDeferred
async def test_redirect_goes_where_configured(start_server, github):
    pxed = await start_server(github_config(github, redirect="/ui/machines"))
    browser = Browser()
    callback = await start_sign_in(pxed, github, browser)
    r = await browser.get(callback)
    assert r.code == 302
    assert r.header("location") == "/ui/machines"


@pytest_twisted.ensureDeferred
async def test_login_is_lower_cased(pxed, github):
    github.account = Account(login="Mona-Lisa", id=42, name=None, email="mona@example.org")
    browser = await sign_in(pxed, github)
    user = (await me(pxed, browser)).json()
    assert (user["Username"], user["Name"]) == ("mona-lisa", "")


@pytest_twisted.ensureDeferred
async def test_second_sign_in_reuses_the_user(pxed, github):
    first = await sign_in(pxed, github)
    # GitHub logins can change; the account is matched on its id.
    github.account.login = "octocat-renamed"
    second = await sign_in(pxed, github)
    assert first.cookie("session-name") != second.cookie("session-name")
    for browser in (first, second):
        r = await me(pxed, browser)
        assert r.code == 200
        assert r.json()["Username"] == "octocat"
    assert await usernames(pxed) == ["admin", "octocat"]


@pytest_twisted.ensureDeferred
async def test_private_email_comes_from_user_emails(pxed, github):
    github.account = Account(
        login="hidden",
        id=7,
        email=None,
        emails=[
            {"email": "old@example.org", "primary": False, "verified": True},
            {"email": "Hidden@Example.org", "primary": True, "verified": True},
        ],
    )
    browser = await sign_in(pxed, github)
    assert (await me(pxed, browser)).json()["Email"] == "Hidden@Example.org"
    assert github.called("GET", "/user/emails")


@pytest_twisted.ensureDeferred
async def test_unverified_primary_email_is_not_taken(pxed, github):
    github.account = Account(
        login="unverified",
        id=8,
        email=None,
        emails=[{"email": "u@example.org", "primary": True, "verified": False}],
    )
    browser = await sign_in(pxed, github)
    assert (await me(pxed, browser)).json()["Email"] == ""


# -- the state binds the flow to the browser ---------------------------------


@pytest_twisted.ensureDeferred
async def test_callback_in_another_browser_is_refused(pxed, github):
    callback = await start_sign_in(pxed, github, Browser())
    other = Browser()
    r = await other.get(callback)
    assert r.code == 400
    assert "state does not match this browser" in r.json()["error"]
    assert "session-name" not in other.set_cookies
    assert await usernames(pxed) == ["admin"]
    # Refused before the code was spent.
    assert not github.called("POST", "/login/oauth/access_token")


@pytest_twisted.ensureDeferred
async def test_tampered_or_missing_state_is_refused(pxed, github):
    browser = Browser()
    callback = await start_sign_in(pxed, github, browser)
    r = await browser.get(with_query(callback, state="forged"))
    assert r.code == 400
    assert "state does not match this browser" in r.json()["error"]
    # The failed try spent the state: the genuine callback is refused too.
    r = await browser.get(callback)
    assert r.code == 400

    browser = Browser()
    callback = await start_sign_in(pxed, github, browser)
    parts = urlsplit(callback)
    no_state = urlunsplit(parts._replace(query=urlencode({"code": "x"})))
    r = await browser.get(no_state)
    assert r.code == 400
    assert "state does not match this browser" in r.json()["error"]
    assert await usernames(pxed) == ["admin"]


@pytest_twisted.ensureDeferred
async def test_an_earlier_state_is_refused(pxed, github):
    browser = Browser()
    first = await start_sign_in(pxed, github, browser)
    # A second start replaces the state cookie.
    await start_sign_in(pxed, github, browser)
    r = await browser.get(first)
    assert r.code == 400
    assert await usernames(pxed) == ["admin"]


# -- GitHub saying no ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bad_code_signs_nobody_in(pxed, github):
    browser = Browser()
    callback = await start_sign_in(pxed, github, browser)
    r = await browser.get(with_query(callback, code="not-a-code"))
    assert r.code == 400
    assert "invalid or has expired" in r.json()["error"]
    assert "session-name" not in browser.set_cookies
    assert await usernames(pxed) == ["admin"]


@pytest_twisted.ensureDeferred
async def test_a_code_is_good_once(pxed, github):
    browser = Browser()
    callback = await start_sign_in(pxed, github, browser)
    r = await browser.get(callback)
    assert r.code == 302
    # Replayed with a fresh state of another browser: GitHub refuses the code.
    other = Browser()
    fresh = await start_sign_in(pxed, github, other)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    r = await other.get(with_query(fresh, code=code))
    assert r.code == 400
    assert "session-name" not in other.set_cookies


@pytest_twisted.ensureDeferred
async def test_user_cancelling_at_github(pxed, github):
    github.deny = True
    browser = Browser()
    r = await browser.get(pxed.url + LOGIN)
    r = await browser.get(r.header("location"))
    callback = r.header("location")
    assert "error=access_denied" in callback
    r = await browser.get(callback)
    assert r.code == 400
    assert r.json()["error"] == (
        "GitHub sign-in failed: The user has denied your application access."
    )
    assert await usernames(pxed) == ["admin"]


@pytest_twisted.ensureDeferred
async def test_wrong_client_secret_is_a_bad_gateway(start_server, github, logged):
    pxed = await start_server(github_config(github, client_secret="not-the-secret-0123456789"))
    browser = Browser()
    callback = await start_sign_in(pxed, github, browser)
    r = await browser.get(callback)
    assert r.code == 502
    assert r.json()["error"] == (
        "GitHub sign-in failed: code exchange refused (incorrect_client_credentials)"
    )
    assert "not-the-secret" not in r.text
    assert not any("not-the-secret" in line for line in logged)
    assert await usernames(pxed) == ["admin"]


@pytest_twisted.ensureDeferred
async def test_github_failing_is_a_bad_gateway(pxed, github):
    github.fail["/user"] = 500
    browser = Browser()
    r = await browser.get(await start_sign_in(pxed, github, browser))
    assert r.code == 502
    assert r.json()["error"] == "GitHub sign-in failed: reading the profile: HTTP 500"
    assert "session-name" not in browser.set_cookies
    assert await usernames(pxed) == ["admin"]


@pytest_twisted.ensureDeferred
async def test_github_unreachable_is_a_bad_gateway(start_server, github):
    # A port that was just free: nothing listens there.
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
    closed = f"http://127.0.0.1:{port.getHost().port}"
    await port.stopListening()
    pxed = await start_server(github_config(github, api_url=closed))
    browser = Browser()
    r = await browser.get(await start_sign_in(pxed, github, browser))
    assert r.code == 502
    assert r.json()["error"].startswith("GitHub sign-in failed: reading the profile: ")
    assert await usernames(pxed) == ["admin"]


# -- configuration and accounts ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_not_configured_is_404(start_server, github):
    server = await start_server()
    browser = Browser()
    for path in (LOGIN, CALLBACK + "?code=x&state=y"):
        r = await browser.get(server.url + path)
        assert r.code == 404
        assert r.json() == {"error": "GitHub sign-in is not configured on this server"}
    assert "pxed-oauth-state" not in browser.jar
    assert github.requests == []


@pytest_twisted.ensureDeferred
async def test_local_user_with_another_email_is_not_taken_over(pxed, github):
    r = await pxed.admin.post(
        "/user", {"Username": "octocat", "Email": "someone-else@example.org", "Role": "admin"}
    )
    assert r.code == 201
    browser = Browser()
    r = await browser.get(await start_sign_in(pxed, github, browser))
    assert r.code == 409
    assert r.json()["error"].startswith("a local account named 'octocat' exists")
    assert "session-name" not in browser.set_cookies
    r = await pxed.admin.get("/user/octocat")
    assert r.json()["GitHub"] is False
    # The decision took the verified primary e-mail.
    assert github.called("GET", "/user/emails")


@pytest_twisted.ensureDeferred
async def test_local_user_with_the_verified_email_is_linked(pxed, github):
    r = await pxed.admin.post(
        "/user", {"Username": "octocat", "Email": "OctoCat@Example.org", "Role": "moderator"}
    )
    assert r.code == 201
    browser = await sign_in(pxed, github)
    user = (await me(pxed, browser)).json()
    assert (user["Username"], user["Role"], user["GitHub"]) == ("octocat", "moderator", True)
    assert user["Email"] == "OctoCat@Example.org"


@pytest_twisted.ensureDeferred
async def test_local_user_linked_to_another_github_account(pxed, github):
    await sign_in(pxed, github)
    # Someone else now holds the login on GitHub.
    github.account = Account(login="OctoCat", id=999, email="octocat@example.org")
    browser = Browser()
    r = await browser.get(await start_sign_in(pxed, github, browser))
    assert r.code == 409
    assert "linked to another GitHub account" in r.json()["error"]


@pytest_twisted.ensureDeferred
async def test_login_that_cannot_be_a_username(pxed, github):
    github.account = Account(login="me", id=5)
    browser = Browser()
    r = await browser.get(await start_sign_in(pxed, github, browser))
    assert r.code == 400
    assert "cannot be a username" in r.json()["error"]
    assert await usernames(pxed) == ["admin"]


# -- secrets, audit, sign-out ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_secret_and_tokens_never_leak(start_server, pxed, github, logged):
    browser = await sign_in(pxed, github)
    await sign_in(pxed, github, browser)
    github.fail["/user"] = 502
    r = await browser.get(await start_sign_in(pxed, github, browser))
    assert r.code == 502
    github.fail.clear()
    pxed = await start_server(github_config(github, client_secret=CLIENT_SECRET[::-1]))
    r = await browser.get(await start_sign_in(pxed, github, browser))
    assert r.code == 502

    tokens = [t for t in github.issued if t.startswith("gho_")]
    assert len(tokens) == 3
    secrets_ = [CLIENT_SECRET, CLIENT_SECRET[::-1], *tokens]
    for body in browser.bodies:
        for s in secrets_:
            assert s.encode() not in body
    assert any("GitHub sign-in" in line for line in logged)
    for line in logged:
        for s in [*secrets_, *github.issued]:
            assert s not in line


@pytest_twisted.ensureDeferred
async def test_sign_in_is_audited(pxed, github):
    await sign_in(pxed, github)
    r = await pxed.admin.get("/events?target_type=user&target=octocat")
    assert r.code == 200
    found = {(e["Action"], e["Actor"], e["Detail"]) for e in r.json()}
    assert ("user.login", "octocat", "github") in found
    assert ("user.create", "octocat", "role=user") in found


@pytest_twisted.ensureDeferred
async def test_sign_out_ends_the_session(pxed, github):
    browser = await sign_in(pxed, github)
    session = browser.cookie("session-name")
    # Without the CSRF token the session's page got, nothing happens.
    r = await browser.post(pxed.url + "/user/logout")
    assert r.code == 403, r.text
    assert browser.cookie("session-name") == session
    csrf = browser.cookie("pxed-csrf")
    assert csrf and browser.jar["pxed-csrf"].path == "/"
    r = await browser.post(pxed.url + "/user/logout", headers={"X-CSRF-Token": csrf})
    assert r.code == 200, r.text
    assert browser.cookie("session-name") is None
    assert (await me(pxed, browser)).code == 401
    # The old cookie, kept by a client that ignores the deletion, is dead too.
    r = await treq.get(
        pxed.url + "/user/me", headers={"Cookie": f"session-name={session}"}, persistent=False
    )
    assert r.code == 401
    body = json.loads(await treq.content(r))
    assert "sign in again" in body["error"]
