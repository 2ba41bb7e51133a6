"""A client of GitHub's OAuth web flow and REST API, for signing in.

The client secret and the access token never reach a log line, a response
or the database: errors name the step that failed and what GitHub answered,
never the request, and the token is dropped once the profile is read."""

from __future__ import annotations

import json
from typing import Any

from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from pxed.config import GitHub
from pxed.db.errors import InvalidError
from pxed.db.github import GitHubUser
from pxed.db.users import check_username
from pxed.errors import BadGateway, BadRequest

log = Logger()

# Each call to GitHub, connecting to the last byte of the answer.
TIMEOUT = 15.0
# GitHub's answers are small JSON documents.
MAX_ANSWER = 1024 * 1024
# GitHub's API refuses requests without a User-Agent.
USER_AGENT = b"pxed"
API_VERSION = b"2022-11-28"
# Token endpoint errors that are the user's to retry; any other (wrong
# client credentials, redirect_uri mismatch) is the server's configuration.
USER_ERRORS = {
    "bad_verification_code": "the sign-in code is invalid or has expired; sign in again",
    "unverified_user_email": "verify your primary e-mail address on GitHub, then sign in again",
}


class AnswerTooLarge(ValueError):
    pass


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
            self.done.errback(Failure(AnswerTooLarge(f"answer larger than {MAX_ANSWER} bytes")))
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


class GitHubClient:
    def __init__(
        self,
        github: GitHub,
        reactor: IReactorTime,
        http: HTTPClient,
        timeout: float = TIMEOUT,
    ) -> None:
        self._github = github
        self._reactor = reactor
        self._http = http
        self._timeout = timeout

    async def _exchange(self, method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
        response: IResponse = await self._http.request(method, url, allow_redirects=False, **kwargs)
        answer = _Answer()
        response.deliverBody(answer)
        return response.code, await answer.done

    async def _call(self, step: str, method: str, url: str, **kwargs: Any) -> Any:
        """The JSON GitHub answers, or BadGateway naming *step*.  Messages carry
        what GitHub said and never the request (it holds the secret or token)."""

        def timed_out(result: Any, timeout: float) -> None:
            # Cancelling aborts the connection; whatever error that gave, the
            # cause is the timeout.
            raise defer.TimeoutError()

        timeout = self._timeout
        d = defer.Deferred.fromCoroutine(self._exchange(method, url, **kwargs))
        d.addTimeout(timeout, self._reactor, onTimeoutCancel=timed_out)
        try:
            code, body = await d
        except defer.TimeoutError:
            log.warn("GitHub sign-in: {step}: no answer in {timeout}s", step=step, timeout=timeout)
            raise BadGateway(f"GitHub sign-in failed: {step}: no answer in {timeout:g}s") from None
        except AnswerTooLarge as e:
            log.warn("GitHub sign-in: {step}: {error}", step=step, error=str(e))
            raise BadGateway(f"GitHub sign-in failed: {step}: {e}") from None
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
                message=short(message),
            )
            raise BadGateway(f"GitHub sign-in failed: {step}: HTTP {code}")
        if data is None:
            log.warn("GitHub sign-in: {step}: the answer is not JSON", step=step)
            raise BadGateway(f"GitHub sign-in failed: {step}: the answer is not JSON")
        return data

    async def access_token(self, code: str, redirect_uri: str) -> str:
        data = await self._call(
            "code exchange",
            "POST",
            f"{self._github.url.rstrip('/')}/login/oauth/access_token",
            data={
                "client_id": self._github.client_id,
                "client_secret": self._github.client_secret,
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
            error = short(error, 64)
            log.warn(
                "GitHub sign-in: code exchange refused: {error} {description}",
                error=error,
                description=short(data.get("error_description")),
            )
            if error in USER_ERRORS:
                raise BadRequest(f"GitHub sign-in failed: {USER_ERRORS[error]}")
            raise BadGateway(f"GitHub sign-in failed: code exchange refused ({error})")
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise BadGateway("GitHub sign-in failed: code exchange: no access token in the answer")
        return token

    async def primary_email(self, token: str) -> str | None:
        url = f"{self._github.api_url.rstrip('/')}/user/emails"
        emails = await self._call("reading the e-mails", "GET", url, headers=_api_headers(token))
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

    async def profile(self, token: str) -> GitHubUser:
        """The account the token is for; its e-mail is the profile's public
        one (None when private) and verified_email is not asked yet."""
        url = f"{self._github.api_url.rstrip('/')}/user"
        profile = await self._call("reading the profile", "GET", url, headers=_api_headers(token))
        if (
            not isinstance(profile, dict)
            or not isinstance(profile.get("id"), int)
            or isinstance(profile.get("id"), bool)
            or not isinstance(profile.get("login"), str)
        ):
            raise BadGateway("GitHub sign-in failed: reading the profile: unexpected answer")
        login = profile["login"]
        try:
            check_username(login.lower())
        except InvalidError:
            raise BadRequest(
                f"GitHub sign-in failed: the GitHub login {short(login, 64)!r} cannot be a "
                "username here; ask an admin for an account"
            ) from None
        name = profile.get("name") if isinstance(profile.get("name"), str) else ""
        email = profile.get("email") if isinstance(profile.get("email"), str) else None
        return GitHubUser(
            id=profile["id"], login=login, name=name, email=email, verified_email=None
        )


def _describe(e: Exception) -> str:
    return short(f"{type(e).__name__}: {e}")


def short(value: Any, limit: int = 200) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _api_headers(token: str) -> dict[bytes, list[bytes]]:
    return {
        b"authorization": [b"Bearer " + token.encode()],
        b"accept": [b"application/vnd.github+json"],
        b"x-github-api-version": [API_VERSION],
        b"user-agent": [USER_AGENT],
    }
