"""The route table.  Every resource module registers its handlers here with
``@route(path, methods, access=…)``; the access rule is recorded with the
route so nothing is served without one (tests/web/test_access.py walks the
table).  The wrapper is the one place where a request is authenticated,
authorised and its result rendered."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import RequestRedirect

from pxed.errors import ApiError

log = Logger()

app = Klein()


@dataclass(frozen=True)
class RouteInfo:
    path: str
    methods: tuple[str, ...]
    access: str
    endpoint: str


# endpoint name -> what it serves and who may call it
ROUTES: dict[str, RouteInfo] = {}


def render(request: IRequest, result: Any) -> Any:
    """dict/list → JSON; str → text/plain (the seed's plain success messages);
    anything else (bytes, a resource, NOT_DONE_YET) is left to Klein."""
    if isinstance(result, (dict, list)):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(result).encode() + b"\n"
    if isinstance(result, str):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (result if result.endswith("\n") else result + "\n").encode()
    return result


def error_body(request: IRequest, status: int, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps({"error": message}).encode() + b"\n"


Handler = Callable[..., Awaitable[Any]]


def route(path: str, methods: tuple[str, ...] | list[str], *, access: str, branch: bool = False):
    """Register an ``async def handler(self, request, **path_args)``.

    *access* names a rule in pxed.web.access; the app's ``authorise`` is
    called with it before the handler runs."""

    def decorate(handler: Handler) -> Handler:
        endpoint = f"{handler.__module__.rsplit('.', 1)[-1]}.{handler.__name__}"
        if endpoint in ROUTES:
            raise RuntimeError(f"duplicate endpoint {endpoint}")
        ROUTES[endpoint] = RouteInfo(path, tuple(methods), access, endpoint)

        @functools.wraps(handler)
        async def wrapper(self: Any, request: IRequest, **kwargs: Any) -> Any:
            await self.authorise(request, access, kwargs)
            return render(request, await handler(self, request, **kwargs))

        app.route(path, methods=list(methods), endpoint=endpoint, branch=branch)(wrapper)
        return handler

    return decorate


@app.handle_errors(ApiError)
def _api_error(self: Any, request: IRequest, failure: Any) -> bytes:
    err: ApiError = failure.value
    return error_body(request, err.status, err.message)


@app.handle_errors(WerkzeugNotFound)
def _not_found(self: Any, request: IRequest, failure: Any) -> bytes:
    return error_body(request, 404, "no such route")


@app.handle_errors(WerkzeugMethodNotAllowed)
def _method_not_allowed(self: Any, request: IRequest, failure: Any) -> bytes:
    allowed = failure.value.valid_methods or []
    request.setHeader(b"allow", ", ".join(allowed).encode())
    return error_body(request, 405, "method not allowed")


@app.handle_errors(RequestRedirect)
def _redirect(self: Any, request: IRequest, failure: Any) -> bytes:
    # werkzeug's canonical form of a path (trailing slash, merged slashes).
    request.setHeader(b"location", failure.value.new_url.encode())
    return error_body(request, failure.value.code, "moved")


@app.handle_errors(Exception)
def _unexpected(self: Any, request: IRequest, failure: Any) -> bytes:
    # The traceback goes to the log, never to the client.
    log.failure(
        "unhandled error in {method} {path}",
        failure,
        method=request.method.decode(),
        path=request.path.decode(errors="replace"),
    )
    return error_body(request, 500, "internal error")
