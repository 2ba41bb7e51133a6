"""A stand-in for GitHub's OAuth web flow and REST API: the four endpoints
pxed uses, with GitHub's answers (including its habit of answering token
errors with 200 and an "error" field).

Over real HTTP on loopback:

    standin = await GitHubStandIn("client-id", "client-secret").start()
    ... standin.url ...
    await standin.stop()

or in memory, without a port (any host reaches it):

    http = treq.testing.StubTreq(standin.app.resource())
    await http.get("http://github.test/user", ...)
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from klein import Klein
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.web.iweb import IRequest
from twisted.web.server import Site

DOCS = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors"


@dataclass
class Account:
    """The GitHub user who signs in at the stand-in."""

    login: str = "octocat"
    id: int = 583231
    name: str | None = "The Octocat"
    # The profile's public e-mail; None when the user keeps it private.
    email: str | None = "octocat@example.org"
    # What /user/emails lists; None: the public e-mail, primary and verified.
    emails: list[dict[str, Any]] | None = None

    def profile(self) -> dict[str, Any]:
        return {
            "login": self.login,
            "id": self.id,
            "node_id": f"MDQ6VXNlcj{self.id}",
            "type": "User",
            "site_admin": False,
            "name": self.name,
            "email": self.email,
        }

    def email_list(self) -> list[dict[str, Any]]:
        if self.emails is not None:
            return self.emails
        if self.email is None:
            return []
        return [{"email": self.email, "primary": True, "verified": True, "visibility": "public"}]


@dataclass
class Grant:
    account: Account
    redirect_uri: str
    scopes: tuple[str, ...]


class _QuietSite(Site):
    def log(self, request: Any) -> None:
        pass


@dataclass
class GitHubStandIn:
    client_id: str
    client_secret: str
    account: Account = field(default_factory=Account)
    # Set to answer the authorization with ?error=access_denied (the user
    # clicked Cancel).
    deny: bool = False
    # path -> HTTP status to answer with instead (GitHub having a bad day).
    fail: dict[str, int] = field(default_factory=dict)
    # path -> (HTTP status, body) to answer with as is instead: answers no
    # GitHub gives, that pxed must not trust.
    raw: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    # paths that never answer.
    hang: set[str] = field(default_factory=set)
    # (method, path) of every request, in order.
    requests: list[tuple[str, str]] = field(default_factory=list)
    codes: dict[str, Grant] = field(default_factory=dict)
    tokens: dict[str, Grant] = field(default_factory=dict)
    # Every code and token ever handed out (they must never leak).
    issued: list[str] = field(default_factory=list)
    url: str = ""

    app = Klein()

    def __post_init__(self) -> None:
        self._port: IListeningPort | None = None
        self._hanging: list[defer.Deferred] = []

    async def start(self) -> GitHubStandIn:
        from twisted.internet import reactor

        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self._port = await endpoint.listen(_QuietSite(self.app.resource()))
        self.url = f"http://127.0.0.1:{self._port.getHost().port}"
        return self

    async def stop(self) -> None:
        for d in self._hanging:
            if not d.called:
                d.cancel()
        if self._port is not None:
            await self._port.stopListening()

    def called(self, method: str, path: str) -> bool:
        return (method, path) in self.requests

    # -- helpers ----------------------------------------------------------

    def _enter(self, request: IRequest) -> defer.Deferred | None:
        path = request.path.decode()
        self.requests.append((request.method.decode(), path))
        if path in self.hang:
            # Cancelled (the client gave up, or stop()): an empty answer
            # to nobody.
            d: defer.Deferred = defer.Deferred(lambda d: d.callback(b""))
            self._hanging.append(d)
            return d
        return None

    def _failing(self, request: IRequest) -> bytes | None:
        path = request.path.decode()
        if path in self.raw:
            status, body = self.raw[path]
            request.setResponseCode(status)
            return body
        status = self.fail.get(path)
        if status is None:
            return None
        return _json(request, {"message": "Server Error"}, status)

    def _grant(self, request: IRequest) -> Grant | None:
        scheme, _, token = (request.getHeader("authorization") or "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        return self.tokens.get(token.strip())

    def _api(self, request: IRequest) -> tuple[Grant | None, bytes | None]:
        """The grant behind the request's token, or the error GitHub gives."""
        if not request.getHeader("user-agent"):
            return None, _json(
                request,
                {
                    "message": "Request forbidden by administrative rules. "
                    "Please make sure your request has a User-Agent header"
                },
                403,
            )
        grant = self._grant(request)
        if grant is None:
            return None, _json(
                request,
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
                401,
            )
        return grant, None

    # -- the OAuth web flow -------------------------------------------------

    @app.route("/login/oauth/authorize", methods=["GET"])
    def authorize(self, request: IRequest) -> Any:
        hanging = self._enter(request)
        if hanging is not None:
            return hanging
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        if args.get("client_id") != self.client_id:
            request.setResponseCode(404)
            return b"Not Found"
        redirect_uri = args.get("redirect_uri", "")
        if urlsplit(redirect_uri).scheme not in ("http", "https"):
            request.setResponseCode(400)
            return b"The redirect_uri is not valid"
        back: dict[str, str]
        if self.deny:
            back = {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
                "error_uri": DOCS,
            }
        else:
            code = secrets.token_hex(10)
            scopes = tuple(s for s in args.get("scope", "").replace(",", " ").split() if s)
            self.codes[code] = Grant(self.account, redirect_uri, scopes)
            self.issued.append(code)
            back = {"code": code}
        if "state" in args:
            back["state"] = args["state"]
        sep = "&" if "?" in redirect_uri else "?"
        request.setResponseCode(302)
        request.setHeader(b"location", (redirect_uri + sep + urlencode(back)).encode())
        return b""

    @app.route("/login/oauth/access_token", methods=["POST"])
    def access_token(self, request: IRequest) -> Any:
        hanging = self._enter(request)
        if hanging is not None:
            return hanging
        failing = self._failing(request)
        if failing is not None:
            return failing
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        if args.get("client_id") != self.client_id or args.get("client_secret") != (
            self.client_secret
        ):
            return _token_answer(
                request,
                {
                    "error": "incorrect_client_credentials",
                    "error_description": "The client_id and/or client_secret passed are incorrect.",
                    "error_uri": DOCS + "#incorrect-client-credentials",
                },
            )
        grant = self.codes.pop(args.get("code", ""), None)
        if grant is None:
            return _token_answer(
                request,
                {
                    "error": "bad_verification_code",
                    "error_description": "The code passed is incorrect or expired.",
                    "error_uri": DOCS + "#bad-verification-code",
                },
            )
        if "redirect_uri" in args and args["redirect_uri"] != grant.redirect_uri:
            return _token_answer(
                request,
                {
                    "error": "redirect_uri_mismatch",
                    "error_description": "The redirect_uri MUST match the registered "
                    "callback URL for this application.",
                    "error_uri": DOCS + "#redirect-uri-mismatch2",
                },
            )
        token = "gho_" + secrets.token_urlsafe(27)
        self.tokens[token] = grant
        self.issued.append(token)
        return _token_answer(
            request,
            {"access_token": token, "token_type": "bearer", "scope": ",".join(grant.scopes)},
        )

    # -- the REST API -------------------------------------------------------

    @app.route("/user", methods=["GET"])
    def user(self, request: IRequest) -> Any:
        hanging = self._enter(request)
        if hanging is not None:
            return hanging
        failing = self._failing(request)
        if failing is not None:
            return failing
        grant, error = self._api(request)
        if grant is None:
            return error
        return _json(request, grant.account.profile())

    @app.route("/user/emails", methods=["GET"])
    def user_emails(self, request: IRequest) -> Any:
        hanging = self._enter(request)
        if hanging is not None:
            return hanging
        failing = self._failing(request)
        if failing is not None:
            return failing
        grant, error = self._api(request)
        if grant is None:
            return error
        if not {"user", "user:email"} & set(grant.scopes):
            return _json(
                request,
                {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
                404,
            )
        return _json(request, grant.account.email_list())


def _json(request: IRequest, data: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps(data).encode()


def _token_answer(request: IRequest, data: dict[str, str]) -> bytes:
    """GitHub answers the token endpoint form-encoded unless asked for
    JSON, and with 200 even for errors."""
    accept = request.getHeader("accept") or ""
    if "application/json" in accept:
        return _json(request, data)
    request.setHeader(b"content-type", b"application/x-www-form-urlencoded; charset=utf-8")
    return urlencode(data).encode()
