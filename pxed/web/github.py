"""Sign-in with GitHub (OAuth web flow).

``GET /user/login/github`` sends the browser to GitHub with a random
``state`` that a short-lived cookie binds to this browser.  GitHub sends the
browser back to ``/user/login/github/callback`` with a code; the server
exchanges it (server to server, with the client secret) for an access token,
reads the GitHub profile with that token, finds or creates the user and
starts a session.

The client secret and the access token never reach a log line, a response or
the database: errors name the step that failed and what GitHub answered,
never the request, and the token is dropped once the profile is read."""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
import treq
from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IRequest, IResponse

from pxed.config import GitHub
from pxed.db import events, users
from pxed.db.users import User, UserFields
from pxed.errors import BadGateway, BadRequest, Conflict, NotFound
from pxed.web.router import route

log = Logger()

LOGIN_PATH = "/user/login/github"
CALLBACK_PATH = LOGIN_PATH + "/callback"
STATE_COOKIE = b"pxed-oauth-state"
# The state lives as long as a sign-in at GitHub reasonably takes.
STATE_MAX_AGE = 600
SCOPE = "read:user user:email"
# Each call to GitHub, connecting to the last byte of the answer.
TIMEOUT = 15.0
# GitHub's answers are small JSON documents.
MAX_ANSWER = 1024 * 1024
# Query parameters GitHub sends are short; anything longer is not GitHub's.
MAX_ARG = 1024
# GitHub's API refuses requests without a User-Agent.
USER_AGENT = b"pxed"
API_VERSION = b"2022-11-28"
# Token endpoint errors that are the user's to retry; any other (wrong
# client credentials, redirect_uri mismatch) is the server's configuration.
USER_ERRORS = {
    "bad_verification_code": "the sign-in code is invalid or has expired; sign in again",
    "unverified_user_email": "verify your primary e-mail address on GitHub, then sign in again",
}


@dataclass(frozen=True)
class GitHubUser:
    id: int
    login: str
    name: str
    # The profile's public e-mail, else the primary verified one, else "".
    email: str
    # The primary verified address from /user/emails; None when not asked
    # (nothing to compare it with) or when there is none.
    verified_email: str | None

    @property
    def username(self) -> str:
        return self.login.lower()


# -- the database side: one transaction per sign-in ---------------------------


def thd_needs_verified_email(conn: sa.Connection, github_id: int, username: str) -> bool:
    """Whether signing in would link a local account, which takes the
    verified primary e-mail to decide."""
    if users.thd_get_by_github(conn, github_id) is not None:
        return False
    local = users.thd_get(conn, username)
    return local is not None and local.github_id is None


def thd_sign_in(conn: sa.Connection, gh: GitHubUser) -> User:
    """The user this GitHub account signs in as: the one linked to it, else
    a local account of the same name whose e-mail is the account's verified
    primary e-mail (linked now), else a new user; the sign-in is recorded."""
    user = users.thd_get_by_github(conn, gh.id)
    if user is None:
        username = gh.username
        local = users.thd_get(conn, username)
        if local is None:
            user = users.thd_create(
                conn,
                username,
                UserFields(name=gh.name[:255], email=gh.email[:255], role="user"),
                username,
                github_id=gh.id,
            )
        elif local.github_id is not None:
            raise Conflict(
                f"a local account named {username!r} exists and is linked to another GitHub account"
            )
        elif not (
            local.email and gh.verified_email and local.email.lower() == gh.verified_email.lower()
        ):
            raise Conflict(
                f"a local account named {username!r} exists and its e-mail is not the "
                "verified primary e-mail of this GitHub account; ask an admin"
            )
        else:
            users.thd_link_github(conn, username, gh.id)
            events.thd_record(conn, username, "user.link", "user", username, f"github:{gh.id}")
            user = users.thd_get(conn, username)
            assert user is not None
    events.thd_record(conn, user.username, "user.login", "user", user.username, "github")
    return user


# -- talking to GitHub ---------------------------------------------------------


class _Answer(Protocol):
    """Collects a response body up to MAX_ANSWER; beyond that, or when the
    read is cancelled (the timeout), the connection is dropped."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.done: defer.Deferred[bytes] = defer.Deferred(lambda _: self._abort())

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.size += len(data)
        if self.size > MAX_ANSWER:
            self.done.errback(Failure(ValueError(f"answer larger than {MAX_ANSWER} bytes")))
            self._abort()
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)

    def _abort(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        elif self.transport is not None:
            self.transport.stopProducing()


async def _exchange(method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
    response: IResponse = await treq.request(
        method, url, allow_redirects=False, persistent=False, **kwargs
    )
    answer = _Answer()
    response.deliverBody(answer)
    return response.code, await answer.done


async def _call(step: str, method: str, url: str, **kwargs: Any) -> Any:
    """The JSON GitHub answers, or BadGateway naming *step*.  Messages carry
    what GitHub said and never the request (it holds the secret or token)."""
    from twisted.internet import reactor

    def timed_out(result: Any, timeout: float) -> None:
        # Cancelling aborts the connection; whatever error that gave, the
        # cause is the timeout.
        raise defer.TimeoutError()

    d = defer.Deferred.fromCoroutine(_exchange(method, url, **kwargs))
    d.addTimeout(TIMEOUT, reactor, onTimeoutCancel=timed_out)
    try:
        code, body = await d
    except defer.TimeoutError:
        log.warn("GitHub sign-in: {step}: no answer in {timeout}s", step=step, timeout=TIMEOUT)
        raise BadGateway(f"GitHub sign-in failed: {step}: no answer in {TIMEOUT:g}s") from None
    except Exception as e:
        log.warn("GitHub sign-in: {step}: {error}", step=step, error=_describe(e))
        raise BadGateway(f"GitHub sign-in failed: {step}: {type(e).__name__}") from None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not 200 <= code < 300:
        message = data.get("message") if isinstance(data, dict) else None
        log.warn(
            "GitHub sign-in: {step}: HTTP {code} {message}",
            step=step,
            code=code,
            message=_short(message),
        )
        raise BadGateway(f"GitHub sign-in failed: {step}: HTTP {code}")
    if data is None:
        log.warn("GitHub sign-in: {step}: the answer is not JSON", step=step)
        raise BadGateway(f"GitHub sign-in failed: {step}: the answer is not JSON")
    return data


def _describe(e: Exception) -> str:
    return _short(f"{type(e).__name__}: {e}")


def _short(value: Any, limit: int = 200) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _api_headers(token: str) -> dict[bytes, list[bytes]]:
    return {
        b"authorization": [b"Bearer " + token.encode()],
        b"accept": [b"application/vnd.github+json"],
        b"x-github-api-version": [API_VERSION],
        b"user-agent": [USER_AGENT],
    }


async def _access_token(github: GitHub, code: str, redirect_uri: str) -> str:
    data = await _call(
        "code exchange",
        "POST",
        f"{github.url.rstrip('/')}/login/oauth/access_token",
        data={
            "client_id": github.client_id,
            "client_secret": github.client_secret,
            "code": code,
            "redirect_uri": redirect_uri,
        },
        headers={b"accept": [b"application/json"], b"user-agent": [USER_AGENT]},
    )
    if not isinstance(data, dict):
        raise BadGateway("GitHub sign-in failed: code exchange: unexpected answer")
    # GitHub answers errors here with 200 and an "error" field.
    error = data.get("error")
    if error is not None:
        error = _short(error, 64)
        log.warn(
            "GitHub sign-in: code exchange refused: {error} {description}",
            error=error,
            description=_short(data.get("error_description")),
        )
        if error in USER_ERRORS:
            raise BadRequest(f"GitHub sign-in failed: {USER_ERRORS[error]}")
        raise BadGateway(f"GitHub sign-in failed: code exchange refused ({error})")
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise BadGateway("GitHub sign-in failed: code exchange: no access token in the answer")
    return token


async def _primary_email(github: GitHub, token: str) -> str | None:
    url = f"{github.api_url.rstrip('/')}/user/emails"
    emails = await _call("reading the e-mails", "GET", url, headers=_api_headers(token))
    if not isinstance(emails, list):
        raise BadGateway("GitHub sign-in failed: reading the e-mails: unexpected answer")
    for entry in emails:
        if (
            isinstance(entry, dict)
            and entry.get("primary") is True
            and entry.get("verified") is True
            and isinstance(entry.get("email"), str)
        ):
            return entry["email"]
    return None


def _arg(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode())
    if not values:
        return None
    if len(values[0]) > MAX_ARG:
        raise BadRequest(f"{name}: longer than {MAX_ARG} characters")
    return values[0].decode("utf-8", "replace")


def _redirect(request: IRequest, location: str) -> str:
    request.setResponseCode(302)
    request.setHeader(b"location", location.encode())
    request.setHeader(b"cache-control", b"no-store")
    return f"Redirecting to {location}"


class GitHubRoutes:
    def _github(self) -> GitHub:
        github = self.config.github
        if not github.enabled:
            raise NotFound("GitHub sign-in is not configured on this server")
        return github

    def _state_cookie(self, request: IRequest, value: bytes, max_age: int) -> None:
        request.addCookie(
            STATE_COOKIE,
            value,
            path=LOGIN_PATH.encode(),
            max_age=str(max_age).encode(),
            httpOnly=True,
            secure=self.secure(request),
            sameSite="lax",
        )

    @route(LOGIN_PATH, ["GET"], access="public")
    async def github_login(self, request: IRequest) -> str:
        github = self._github()
        state = secrets.token_urlsafe(32)
        self._state_cookie(request, state.encode(), STATE_MAX_AGE)
        query = urlencode(
            {
                "client_id": github.client_id,
                "redirect_uri": self.base_url(request) + CALLBACK_PATH,
                "scope": SCOPE,
                "state": state,
            },
            quote_via=quote,
        )
        return _redirect(request, f"{github.url.rstrip('/')}/login/oauth/authorize?{query}")

    @route(CALLBACK_PATH, ["GET"], access="public")
    async def github_callback(self, request: IRequest) -> str:
        github = self._github()
        expected = request.getCookie(STATE_COOKIE)
        # A state is good for one try, whatever happens next.
        self._state_cookie(request, b"", 0)
        state = _arg(request, "state")
        if not expected or state is None or not hmac.compare_digest(state.encode(), expected):
            raise BadRequest(f"state does not match this browser; start again at {LOGIN_PATH}")
        error = _arg(request, "error")
        if error is not None:
            reason = _short(_arg(request, "error_description") or error)
            raise BadRequest(f"GitHub sign-in failed: {reason}")
        code = _arg(request, "code")
        if not code:
            raise BadRequest("code: required")

        token = await _access_token(github, code, self.base_url(request) + CALLBACK_PATH)
        gh = await self._github_user(github, token)
        user = await self.db.run(thd_sign_in, gh)
        log.info(
            "GitHub sign-in: {username} (GitHub {login}, id {id})",
            username=user.username,
            login=gh.login,
            id=gh.id,
        )
        await self.start_session(request, user)
        request.setHeader(b"referrer-policy", b"no-referrer")
        return _redirect(request, github.redirect)

    async def _github_user(self, github: GitHub, token: str) -> GitHubUser:
        url = f"{github.api_url.rstrip('/')}/user"
        profile = await _call("reading the profile", "GET", url, headers=_api_headers(token))
        if (
            not isinstance(profile, dict)
            or not isinstance(profile.get("id"), int)
            or isinstance(profile.get("id"), bool)
            or not isinstance(profile.get("login"), str)
        ):
            raise BadGateway("GitHub sign-in failed: reading the profile: unexpected answer")
        github_id, login = profile["id"], profile["login"]
        try:
            users.check_username(login.lower())
        except BadRequest:
            raise BadRequest(
                f"GitHub sign-in failed: the GitHub login {_short(login, 64)!r} cannot be a "
                "username here; ask an admin for an account"
            ) from None
        name = profile.get("name") if isinstance(profile.get("name"), str) else ""
        email = profile.get("email") if isinstance(profile.get("email"), str) else None
        verified = None
        if email is None or await self.db.run(thd_needs_verified_email, github_id, login.lower()):
            verified = await _primary_email(github, token)
        return GitHubUser(
            id=github_id,
            login=login,
            name=name,
            email=email or verified or "",
            verified_email=verified,
        )
