"""Routes: how a resource declares them and how the app serves them.

A resource is a plain class that receives what it uses in its constructor;
its handlers are ``async def handler(self, request, **path_args)`` marked
with ``@route(path, methods, access=…)``.  The mark only records the route:
``mount`` adds the marked handlers of a resource instance to a Klein app,
each wrapped so that the request is authorised (the access rule names a
check in pxed.web.auth) before the handler runs and its result rendered
after.  tests/web/test_access.py walks every route of the table."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import sqlalchemy as sa
from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import IntegerConverter, RequestRedirect, UnicodeConverter, ValidationError

from pxed.db import pool
from pxed.db.errors import (
    ConflictError,
    DomainError,
    InvalidError,
    NotFoundError,
    NotPermittedError,
)
from pxed.errors import (
    ApiError,
    BadRequest,
    Conflict,
    DatabaseBusy,
    Forbidden,
    InsufficientStorage,
    ServiceUnavailable,
    error_json,
)
from pxed.errors import NotFound as ApiNotFound
from pxed.web.body import ID_MAX
from pxed.workers import PoolStopped

log = Logger()

Handler = Callable[..., Awaitable[Any]]
# (request, access rule name, path arguments) -> raises when refused
Authorise = Callable[[IRequest, str, dict[str, Any]], Awaitable[None]]

_MARK = "__pxed_route__"


@dataclass(frozen=True)
class RouteInfo:
    path: str
    methods: tuple[str, ...]
    access: str
    endpoint: str
    branch: bool = False


def route(path: str, methods: Iterable[str], *, access: str, branch: bool = False):
    """Declare a handler's route and who may call it."""

    def decorate(handler: Handler) -> Handler:
        module = handler.__module__.rsplit(".", 1)[-1]
        info = RouteInfo(path, tuple(methods), access, f"{module}.{handler.__name__}", branch)
        setattr(handler, _MARK, info)
        return handler

    return decorate


def routes_of(resource_class: type) -> list[tuple[str, RouteInfo]]:
    """(attribute name, route) of every handler the class declares."""
    found = []
    for name in dir(resource_class):
        info = getattr(getattr(resource_class, name), _MARK, None)
        if info is not None:
            found.append((name, info))
    return found


def route_table(resource_classes: Iterable[type]) -> dict[str, RouteInfo]:
    """endpoint -> route, over all resources; an endpoint declared twice is
    a programming error."""
    table: dict[str, RouteInfo] = {}
    for cls in resource_classes:
        for _, info in routes_of(cls):
            if info.endpoint in table:
                raise RuntimeError(f"duplicate endpoint {info.endpoint}")
            table[info.endpoint] = info
    return table


class IdConverter(IntegerConverter):
    """``<int:…>`` path segments (ids, version numbers): what fits their
    columns (32 bits on PostgreSQL); anything longer or larger matches no
    route (404), rather than reaching a query that cannot take it."""

    regex = r"\d{1,10}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > ID_MAX:
            raise ValidationError()
        return number


class TextConverter(UnicodeConverter):
    """Other path segments (names, UUIDs, MACs): one with a NUL, which
    PostgreSQL's text cannot hold and no name has, matches no route."""

    def to_python(self, value: str) -> str:
        if "\x00" in value:
            raise ValidationError()
        return value


class TextPaths(Resource):
    """In front of the Klein app: a path that is not UTF-8 (``%ff``)
    has its undecodable bytes replaced (U+FFFD) instead of getting Klein's
    plain-text 400 and a logged traceback, so it is routed like any other
    path: JSON 404 for a resource that does not exist, the boot routes'
    own "no work" answers for a MAC that is not one."""

    isLeaf = True

    def __init__(self, inner: IResource) -> None:
        super().__init__()
        self._inner = inner

    def render(self, request: IRequest) -> Any:
        request.prepath = [_as_text(s) for s in request.prepath]
        request.postpath = [_as_text(s) for s in request.postpath]
        # A Host that is no host name (werkzeug would fail binding the
        # routes to it): as if none was sent, the address connected to.
        hosts = request.requestHeaders.getRawHeaders(b"host")
        if hosts and not host_name(hosts[0]):
            request.requestHeaders.removeHeader(b"host")
        return self._inner.render(request)


def _as_text(raw: bytes) -> bytes:
    return raw.decode("utf-8", "replace").encode("utf-8")


@functools.lru_cache(maxsize=4096)
def host_name(raw: bytes) -> bool:
    """Whether a Host header names a host (remembered: clients repeat it)."""
    return _host_name(raw)


def _host_name(raw: bytes) -> bool:
    try:
        raw.decode("ascii").partition(":")[0].encode("idna")
    except UnicodeError:
        return False
    return True


def mount(app: Klein, resource: object, authorise: Authorise) -> None:
    """Serve *resource*'s handlers on *app*, each behind *authorise*."""
    # Before any rule is added: a rule compiles its converters when added.
    app.url_map.converters["int"] = IdConverter
    app.url_map.converters["default"] = app.url_map.converters["string"] = TextConverter
    for name, info in routes_of(type(resource)):
        handler = getattr(resource, name)

        @functools.wraps(handler)
        async def serve(
            request: IRequest, _handler=handler, _access=info.access, _path=info.path, **kwargs: Any
        ) -> Any:
            # The route's template labels the request in pxed.metrics.
            request.route = _path
            await authorise(request, _access, kwargs)
            return render(request, await _handler(request, **kwargs))

        app.route(
            info.path, methods=list(info.methods), endpoint=info.endpoint, branch=info.branch
        )(serve)


def route_of(app: Klein, table: dict[str, RouteInfo], method: bytes, path: bytes) -> str | None:
    """The template of the route *method* *path* would be served by, for a
    request answered before it reached the app (PxedRequest._refuse)."""
    urls = app.url_map.bind("localhost")
    try:
        endpoint, _ = urls.match(
            unquote(path.decode("utf-8", "replace")), method=method.decode("ascii", "replace")
        )
    except HTTPException:  # no route, wrong method, a redirect
        return None
    info = table.get(str(endpoint).removesuffix("_branch"))
    return None if info is None else info.path


def render(request: IRequest, result: Any) -> Any:
    """dict/list → JSON; str → text/plain (the seed's plain success messages);
    anything else (bytes, a resource, NOT_DONE_YET) is left to Klein."""
    if isinstance(result, (dict, list)):
        request.setHeader(b"content-type", b"application/json")
        return _sized(request, json.dumps(result).encode() + b"\n")
    if isinstance(result, str):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return _sized(request, (result if result.endswith("\n") else result + "\n").encode())
    return result


def _sized(request: IRequest, body: bytes) -> bytes:
    # An answer given later (from a Deferred) would otherwise go chunked;
    # some HTTP clients in firmware read only Content-Length.
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def error_body(request: IRequest, status: int, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return _sized(request, error_json(message))


def api_error_body(request: IRequest, err: ApiError) -> bytes:
    if err.retry_after is not None:
        request.setHeader(b"retry-after", str(err.retry_after).encode())
    return error_body(request, err.status, err.message)


# How the database layer's refusals are answered: the one place they meet HTTP.
DOMAIN_ERRORS: dict[type[DomainError], type[ApiError]] = {
    InvalidError: BadRequest,
    NotPermittedError: Forbidden,
    NotFoundError: ApiNotFound,
    ConflictError: Conflict,
}


def as_api_error(err: DomainError) -> ApiError:
    """The HTTP error a database refusal is answered with (same message);
    a kind with no status here is a 500 (tests/db/test_errors.py checks
    that each has one)."""
    for kind in type(err).__mro__:
        if kind in DOMAIN_ERRORS:
            return DOMAIN_ERRORS[kind](err.message)
    return ApiError(err.message)


def internal_error(request: IRequest, failure: Any) -> bytes:
    log.failure(
        "unhandled error in {method} {path}",
        failure,
        method=request.method.decode(),
        path=request.path.decode(errors="replace"),
    )
    return error_body(request, 500, "internal error")


def handle_errors(app: Klein, base_url: str = "") -> None:
    """Every error becomes JSON ``{"error": …}``; tracebacks go to the log,
    never to the client.  Redirects go to *base_url* (the configured public
    URL), else are relative: never to the host a client's Host header names."""

    @app.handle_errors(ApiError)
    def api_error(request: IRequest, failure: Any) -> bytes:
        return api_error_body(request, failure.value)

    @app.handle_errors(DomainError)
    def domain_error(request: IRequest, failure: Any) -> bytes:
        return api_error_body(request, as_api_error(failure.value))

    @app.handle_errors(sa.exc.DBAPIError, OSError)
    def resource_error(request: IRequest, failure: Any) -> bytes:
        # Wherever a handler met them: a lock held elsewhere is 503 with
        # Retry-After, no room on the disk 507; anything else is unexpected.
        if pool.is_busy(failure.value):
            return api_error_body(request, DatabaseBusy())
        if pool.is_full(failure.value):
            log.warn(
                "no room on the disk in {method} {path}: {error}",
                method=request.method.decode(),
                path=request.path.decode(errors="replace"),
                error=str(failure.value),
            )
            return api_error_body(request, InsufficientStorage("not enough space on the server"))
        return internal_error(request, failure)

    @app.handle_errors(PoolStopped)
    def stopping(request: IRequest, failure: Any) -> bytes:
        # A request that raced the server's stop: its work was not done.
        return api_error_body(request, ServiceUnavailable("the server is shutting down; try again"))

    @app.handle_errors(NotFound)
    def not_found(request: IRequest, failure: Any) -> bytes:
        return error_body(request, 404, "no such route")

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(request: IRequest, failure: Any) -> bytes:
        allowed = failure.value.valid_methods or []
        request.setHeader(b"allow", ", ".join(allowed).encode())
        return error_body(request, 405, "method not allowed")

    @app.handle_errors(RequestRedirect)
    def redirect(request: IRequest, failure: Any) -> bytes:
        # werkzeug's canonical form of a path (trailing slash, merged
        # slashes), built on the request's Host: only its path is kept.
        target = urlsplit(failure.value.new_url)
        location = urlunsplit(("", "", target.path or "/", target.query, ""))
        request.setHeader(b"location", (base_url.rstrip("/") + location).encode())
        return error_body(request, failure.value.code, "moved")

    @app.handle_errors(Exception)
    def unexpected(request: IRequest, failure: Any) -> bytes:
        return internal_error(request, failure)
