"""pxed.github.GitHubClient against the GitHub stand-in's resource, in memory:
treq's StubTreq carries the requests and a task.Clock is the reactor, so
every answer (and every timeout) arrives synchronously, without a port or a
real sleep.  tests/web/test_github.py drives the same client over loopback
HTTP through the whole sign-in."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.python.failure import Failure

from pxed.config import GitHub
from pxed.db.github import GitHubUser
from pxed.errors import BadGateway, BadRequest
from pxed.github import MAX_ANSWER, TIMEOUT, GitHubClient
from tests.web.github_standin import Account, GitHubStandIn

CLIENT_ID = "Iv1.0123456789abcdef"
CLIENT_SECRET = "f00dfeedc0ffee0123456789abcdef0123456789"
# StubTreq ignores the host: both reach the stand-in.
GITHUB_URL = "http://github.test"
API_URL = "http://api.github.test"
REDIRECT_URI = "https://pxed.test/user/login/github/callback"
TOKEN = "/login/oauth/access_token"
FAILED = "GitHub sign-in failed: "

# Each call of the client: the stand-in path it asks, and the step its
# errors name.  A token or code the stand-in never issued is fine where the
# stand-in is told to answer something else.
Call = Callable[[GitHubClient], Coroutine[Any, Any, Any]]
CALLS: dict[str, tuple[str, Call]] = {
    TOKEN: ("code exchange", lambda c: c.access_token("a-code", REDIRECT_URI)),
    "/user": ("reading the profile", lambda c: c.profile("gho_unissued")),
    "/user/emails": ("reading the e-mails", lambda c: c.primary_email("gho_unissued")),
}


def settle(work: Coroutine[Any, Any, Any] | defer.Deferred) -> Any:
    """The outcome of *work*, which must have finished already: nothing here
    waits on a real network or clock."""
    outcome: list[Any] = []
    defer.ensureDeferred(work).addBoth(outcome.append)
    assert outcome, "still waiting for an answer"
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


@pytest.fixture
def standin() -> GitHubStandIn:
    return GitHubStandIn(CLIENT_ID, CLIENT_SECRET, url=GITHUB_URL)


@pytest.fixture
def http(standin: GitHubStandIn) -> StubTreq:
    return StubTreq(standin.app.resource())


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


def make_client(
    clock: task.Clock, http: StubTreq, secret: str = CLIENT_SECRET, timeout: float = TIMEOUT
) -> GitHubClient:
    config = GitHub(client_id=CLIENT_ID, client_secret=secret, url=GITHUB_URL, api_url=API_URL)
    return GitHubClient(config, clock, http, timeout)


@pytest.fixture
def client(clock: task.Clock, http: StubTreq) -> GitHubClient:
    return make_client(clock, http)


def authorize(http: StubTreq, scope: str = "read:user user:email") -> str:
    """A code, as GitHub hands it to the browser after the user agreed."""
    response = settle(
        http.get(
            GITHUB_URL + "/login/oauth/authorize",
            params={
                "client_id": CLIENT_ID,
                "redirect_uri": REDIRECT_URI,
                "scope": scope,
                "state": "s",
            },
            allow_redirects=False,
        )
    )
    assert response.code == 302
    location = response.headers.getRawHeaders("location")[0]
    assert location.startswith(REDIRECT_URI + "?")
    return parse_qs(urlsplit(location).query)["code"][0]


def token_for(http: StubTreq, client: GitHubClient, scope: str = "read:user user:email") -> str:
    return settle(client.access_token(authorize(http, scope), REDIRECT_URI))


def failure(exc: type[Exception], work: Coroutine[Any, Any, Any]) -> str:
    """The message of the *exc* that *work* ends with."""
    with pytest.raises(exc) as raised:
        settle(work)
    return str(raised.value)


# -- the code exchange ----------------------------------------------------------


def test_code_exchange_gives_the_token(standin, http, client, clock):
    code = authorize(http)
    token = settle(client.access_token(code, REDIRECT_URI))
    assert token.startswith("gho_")
    assert standin.tokens[token].scopes == ("read:user", "user:email")
    assert standin.requests[-1] == ("POST", TOKEN)
    # The timeout of a call that was answered is cancelled, not left to fire.
    assert clock.getDelayedCalls() == []


def test_a_code_is_good_once(http, client):
    code = authorize(http)
    settle(client.access_token(code, REDIRECT_URI))
    for spent in (code, "not-a-code"):
        assert failure(BadRequest, client.access_token(spent, REDIRECT_URI)) == (
            FAILED + "the sign-in code is invalid or has expired; sign in again"
        )


def test_unverified_email_is_the_users_to_fix(standin, client):
    answer = {"error": "unverified_user_email", "error_description": "..."}
    standin.raw[TOKEN] = (200, json.dumps(answer).encode())
    assert failure(BadRequest, client.access_token("a-code", REDIRECT_URI)) == (
        FAILED + "verify your primary e-mail address on GitHub, then sign in again"
    )


def test_wrong_client_secret_is_a_bad_gateway(clock, http, logged):
    client = make_client(clock, http, secret="not-the-secret-0123456789")
    message = failure(BadGateway, client.access_token(authorize(http), REDIRECT_URI))
    assert message == FAILED + "code exchange refused (incorrect_client_credentials)"
    assert any("incorrect_client_credentials" in line for line in logged)
    assert not any("not-the-secret" in line for line in logged)


def test_redirect_uri_mismatch_is_a_bad_gateway(http, client):
    code = authorize(http)
    message = failure(BadGateway, client.access_token(code, "https://elsewhere.test/cb"))
    assert message == FAILED + "code exchange refused (redirect_uri_mismatch)"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"token_type": "bearer", "scope": ""}, "no access token in the answer"),
        ({"access_token": "", "token_type": "bearer"}, "no access token in the answer"),
        ({"access_token": 12345}, "no access token in the answer"),
        (["gho_in_a_list"], "unexpected answer"),
    ],
)
def test_token_answer_without_a_token(standin, client, answer, error):
    standin.raw[TOKEN] = (200, json.dumps(answer).encode())
    message = failure(BadGateway, client.access_token("a-code", REDIRECT_URI))
    assert message == FAILED + "code exchange: " + error


# -- answers pxed cannot use, at every step -----------------------------------


@pytest.mark.parametrize("path", CALLS)
def test_an_answer_that_is_not_json(standin, client, path):
    step, call = CALLS[path]
    standin.raw[path] = (200, b"<html><body>Unicorn!</body></html>")
    assert failure(BadGateway, call(client)) == f"{FAILED}{step}: the answer is not JSON"


@pytest.mark.parametrize("path", CALLS)
@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"message": "Server Error"}'),
        (503, b"<html>Service Unavailable</html>"),
        # Not followed: GitHub's endpoints do not redirect.
        (302, b""),
    ],
)
def test_an_answer_that_is_not_2xx(standin, client, logged, path, status, body):
    step, call = CALLS[path]
    standin.raw[path] = (status, body)
    assert failure(BadGateway, call(client)) == f"{FAILED}{step}: HTTP {status}"
    assert any(f"{step}: HTTP {status}" in line for line in logged)


def test_a_token_github_does_not_know(client):
    message = failure(BadGateway, client.profile("gho_revoked"))
    assert message == FAILED + "reading the profile: HTTP 401"


def test_emails_without_the_scope(http, client):
    token = token_for(http, client, scope="read:user")
    message = failure(BadGateway, client.primary_email(token))
    assert message == FAILED + "reading the e-mails: HTTP 404"


def padded(data: Any, size: int) -> bytes:
    body = json.dumps(data).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def test_an_answer_up_to_the_limit_is_read(standin, client):
    standin.raw["/user"] = (200, padded(Account().profile(), MAX_ANSWER))
    assert settle(client.profile("gho_unissued")).id == Account().id


def test_an_answer_over_the_limit_is_refused(standin, client, logged):
    standin.raw["/user"] = (200, padded(Account().profile(), MAX_ANSWER + 1))
    message = failure(BadGateway, client.profile("gho_unissued"))
    assert message.startswith(FAILED + "reading the profile: ")
    assert any(f"answer larger than {MAX_ANSWER} bytes" in line for line in logged)


# -- the profile ------------------------------------------------------------------


def test_profile(http, client):
    token = token_for(http, client)
    assert settle(client.profile(token)) == GitHubUser(
        id=583231,
        login="octocat",
        name="The Octocat",
        email="octocat@example.org",
        verified_email=None,
    )


def test_profile_without_name_or_public_email(standin, http, client):
    standin.account = Account(login="Mona-Lisa", id=42, name=None, email=None)
    user = settle(client.profile(token_for(http, client)))
    # The login as GitHub spells it; pxed lower-cases it for the username.
    assert (user.id, user.login, user.name, user.email) == (42, "Mona-Lisa", "", None)


@pytest.mark.parametrize(
    "profile",
    [
        {"login": "octocat", "name": "The Octocat"},
        {"login": "octocat", "id": None},
        {"login": "octocat", "id": True},
        {"login": "octocat", "id": "583231"},
        {"login": "octocat", "id": 583231.0},
        {"id": 583231},
        {"id": 583231, "login": ["octocat"]},
        [{"login": "octocat", "id": 583231}],
    ],
    ids=[
        "no id",
        "null id",
        "bool id",
        "string id",
        "float id",
        "no login",
        "list login",
        "a list",
    ],
)
def test_profile_that_is_not_a_user(standin, client, profile):
    standin.raw["/user"] = (200, json.dumps(profile).encode())
    message = failure(BadGateway, client.profile("gho_unissued"))
    assert message == FAILED + "reading the profile: unexpected answer"


@pytest.mark.parametrize("login", ["me", "login", "-octo", "_octo", "octo cat", "octo@cat"])
def test_login_that_cannot_be_a_username(standin, http, client, login):
    standin.account = Account(login=login, id=5)
    message = failure(BadRequest, client.profile(token_for(http, client)))
    assert message == (
        f"{FAILED}the GitHub login {login!r} cannot be a username here; ask an admin for an account"
    )


# -- the primary verified e-mail ------------------------------------------------


@pytest.mark.parametrize(
    ("emails", "expected"),
    [
        (
            [
                {"email": "old@example.org", "primary": False, "verified": True},
                {"email": "Main@Example.org", "primary": True, "verified": True},
                {"email": "new@example.org", "primary": False, "verified": False},
            ],
            "Main@Example.org",
        ),
        ([{"email": "u@example.org", "primary": True, "verified": False}], None),
        ([{"email": "v@example.org", "primary": False, "verified": True}], None),
        # Only true itself is true.
        ([{"email": "s@example.org", "primary": "true", "verified": True}], None),
        ([{"email": "t@example.org", "primary": True, "verified": 1}], None),
        ([{"primary": True, "verified": True}, "x@example.org"], None),
        ([], None),
    ],
    ids=[
        "primary among others",
        "unverified",
        "not primary",
        "truthy primary",
        "truthy verified",
        "no address",
        "none",
    ],
)
def test_primary_verified_email(standin, http, client, emails, expected):
    standin.account = Account(email=None, emails=emails)
    assert settle(client.primary_email(token_for(http, client))) == expected


def test_emails_that_are_not_a_list(standin, client):
    standin.raw["/user/emails"] = (200, b'{"email": "octocat@example.org"}')
    message = failure(BadGateway, client.primary_email("gho_unissued"))
    assert message == FAILED + "reading the e-mails: unexpected answer"


# -- the timeout ------------------------------------------------------------------


@pytest.mark.parametrize("path", CALLS)
def test_no_answer_times_out(standin, http, clock, client, logged, path):
    step, call = CALLS[path]
    standin.hang.add(path)
    outcome: list[Any] = []
    defer.ensureDeferred(call(client)).addBoth(outcome.append)
    assert standin.requests[-1][1] == path
    clock.advance(TIMEOUT - 0.01)
    assert outcome == []
    clock.advance(0.01)
    assert len(outcome) == 1 and isinstance(outcome[0], Failure)
    assert outcome[0].check(BadGateway)
    assert outcome[0].getErrorMessage() == f"{FAILED}{step}: no answer in 15s"
    assert any(f"{step}: no answer in" in line for line in logged)
    # The client hung up: the stand-in's pending answer is cancelled.
    http.flush()
    assert [pending.called for pending in standin._hanging] == [True]
    assert clock.getDelayedCalls() == []


def test_the_timeout_is_the_clients(standin, http, clock):
    client = make_client(clock, http, timeout=2.5)
    standin.hang.add("/user")
    outcome: list[Any] = []
    defer.ensureDeferred(client.profile("gho_unissued")).addBoth(outcome.append)
    clock.advance(2.4)
    assert outcome == []
    clock.advance(0.1)
    assert outcome[0].getErrorMessage() == FAILED + "reading the profile: no answer in 2.5s"


# -- secrets ----------------------------------------------------------------------


def test_secret_and_token_stay_out_of_errors_and_logs(standin, http, clock, logged):
    client = make_client(clock, http)
    token = token_for(http, client)
    messages = []
    standin.fail["/user"] = 502
    messages.append(failure(BadGateway, client.profile(token)))
    standin.raw["/user/emails"] = (200, b"not json")
    messages.append(failure(BadGateway, client.primary_email(token)))
    standin.hang.add("/user/emails")
    standin.raw.clear()
    outcome: list[Any] = []
    defer.ensureDeferred(client.primary_email(token)).addBoth(outcome.append)
    clock.advance(TIMEOUT)
    messages.append(outcome[0].getErrorMessage())
    wrong = make_client(clock, http, secret=CLIENT_SECRET[::-1])
    messages.append(failure(BadGateway, wrong.access_token(authorize(http), REDIRECT_URI)))

    assert len(messages) == 4 and len(logged) >= 8
    for text in messages + logged:
        for secret in (CLIENT_SECRET, CLIENT_SECRET[::-1], *standin.issued):
            assert secret not in text
