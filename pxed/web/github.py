"""Sign-in with GitHub (OAuth web flow).

``GET /user/login/github`` sends the browser to GitHub with a random
``state`` that a short-lived cookie binds to this browser.  GitHub sends the
browser back to ``/user/login/github/callback`` with a code; the server
exchanges it (server to server, with the client secret) for an access token,
reads the GitHub profile with that token (pxed.github), finds or creates the
user (pxed.db.github) and starts a session."""

from __future__ import annotations

import dataclasses
import hmac
import secrets
from urllib.parse import quote, urlencode

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from pxed.config import GitHub
from pxed.db.github import thd_needs_verified_email, thd_sign_in
from pxed.db.pool import DBPool
from pxed.errors import BadRequest, NotFound
from pxed.github import GitHubClient, short
from pxed.web.auth import Sessions
from pxed.web.origin import Origin
from pxed.web.router import route

log = Logger()

LOGIN_PATH = "/user/login/github"
CALLBACK_PATH = LOGIN_PATH + "/callback"
STATE_COOKIE = b"pxed-oauth-state"
# The state lives as long as a sign-in at GitHub reasonably takes.
STATE_MAX_AGE = 600
SCOPE = "read:user user:email"
# Query parameters GitHub sends are short; anything longer is not GitHub's.
MAX_ARG = 1024


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


class GitHubResource:
    def __init__(
        self,
        db: DBPool,
        github: GitHub,
        client: GitHubClient | None,
        origin: Origin,
        sessions: Sessions,
    ) -> None:
        self._db = db
        self._github_config = github
        self._client = client
        self._origin = origin
        self._sessions = sessions

    def _github(self) -> tuple[GitHub, GitHubClient]:
        if self._client is None or not self._github_config.enabled:
            raise NotFound("GitHub sign-in is not configured on this server")
        return self._github_config, self._client

    def _state_cookie(self, request: IRequest, value: bytes, max_age: int) -> None:
        request.addCookie(
            STATE_COOKIE,
            value,
            path=LOGIN_PATH.encode(),
            max_age=str(max_age).encode(),
            httpOnly=True,
            secure=self._origin.secure(request),
            sameSite="lax",
        )

    @route(LOGIN_PATH, ["GET"], access="public")
    async def github_login(self, request: IRequest) -> str:
        github, _ = self._github()
        state = secrets.token_urlsafe(32)
        self._state_cookie(request, state.encode(), STATE_MAX_AGE)
        query = urlencode(
            {
                "client_id": github.client_id,
                "redirect_uri": self._origin.base_url(request) + CALLBACK_PATH,
                "scope": SCOPE,
                "state": state,
            },
            quote_via=quote,
        )
        return _redirect(request, f"{github.url.rstrip('/')}/login/oauth/authorize?{query}")

    @route(CALLBACK_PATH, ["GET"], access="public")
    async def github_callback(self, request: IRequest) -> str:
        github, client = self._github()
        expected = request.getCookie(STATE_COOKIE)
        # A state is good for one try, whatever happens next.
        self._state_cookie(request, b"", 0)
        state = _arg(request, "state")
        if not expected or state is None or not hmac.compare_digest(state.encode(), expected):
            raise BadRequest(f"state does not match this browser; start again at {LOGIN_PATH}")
        error = _arg(request, "error")
        if error is not None:
            reason = short(_arg(request, "error_description") or error)
            raise BadRequest(f"GitHub sign-in failed: {reason}")
        code = _arg(request, "code")
        if not code:
            raise BadRequest("code: required")

        token = await client.access_token(code, self._origin.base_url(request) + CALLBACK_PATH)
        gh = await client.profile(token)
        if gh.email is None or await self._db.run(thd_needs_verified_email, gh.id, gh.username):
            verified = await client.primary_email(token)
            gh = dataclasses.replace(gh, email=gh.email or verified or "", verified_email=verified)
        user = await self._db.run(thd_sign_in, gh)
        log.info(
            "GitHub sign-in: {username} (GitHub {login}, id {id})",
            username=user.username,
            login=gh.login,
            id=gh.id,
        )
        await self._sessions.start(request, user)
        request.setHeader(b"referrer-policy", b"no-referrer")
        return _redirect(request, github.redirect)
