"""``GET /openapi.json``: the API described as OpenAPI 3.0, generated from
the route table, never written by hand.

Each ``@route`` gives a path (werkzeug's ``<name>`` and ``<int:name>``
become typed path parameters), its methods and its access rule (which
becomes the operation's security).  The handler itself gives the rest:
its docstring the summary, its return annotation the success answer
(``dict``/``list`` JSON, ``str`` plain text, ``HTMLPage`` HTML, the boot
routes' rendered ``JSONBody`` and ``TextBody``, anything else a file), and
its code, read once with ``ast``, what it reads from the request: a JSON
body (``read_json`` and the typed ``Fields`` accessors it and the helpers
it hands the body to call: ``body.str("Name", required=True)`` is a
required string property), an upload (``receive``), query parameters
(``int_arg``, ``query_arg``, ``request.args.get``), headers (``header``)
and the status it sets (``setResponseCode``).  Every error is JSON
``{"error": …}`` (pxed.web.router), so every operation documents that for
4xx and 5xx."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

from twisted.web.iweb import IRequest

from pxed.web import router
from pxed.web.auth import RULES, SESSION_COOKIE
from pxed.web.body import ID_MAX
from pxed.web.handlerscan import Reads, handler_reads
from pxed.web.router import RouteInfo, route

OPENAPI_VERSION = "3.0.3"

# werkzeug converter -> the schema of the path segment it matches
CONVERTERS: dict[str, dict[str, Any]] = {
    # pxed.web.router.TextConverter: no "/", no NUL.
    "default": {"type": "string", "pattern": "^[^/\\x00]+$", "minLength": 1},
    "string": {"type": "string", "pattern": "^[^/\\x00]+$", "minLength": 1},
    # pxed.web.router.IdConverter: what fits an id's column.
    "int": {"type": "integer", "minimum": 0, "maximum": ID_MAX},
    "path": {"type": "string", "minLength": 1},
}
_PARAM = re.compile(r"<(?:(?P<converter>[a-zA-Z_]\w*)(?:\([^)]*\))?:)?(?P<name>[a-zA-Z_]\w*)>")

# What each access rule of pxed.web.auth.RULES admits, for the reader.
ACCESS: dict[str, str] = {
    "public": "anyone, without a credential",
    "signed-in": "any signed-in user",
    "owner": "the owner of the resource, moderators and admins",
    "moderator": "moderators and admins",
    "admin": "admins",
    "self-or-staff": "the user the path names, moderators and admins",
    "self-or-admin": "the user the path names and admins",
    "machine": "the management OS of that machine (machine credential) and admins",
    "machine-or-enlist": (
        "the management OS of that machine, an unknown machine enlisting with that MAC "
        "(enlistment credential), and admins"
    ),
    "owner-or-machine": (
        "the owner of the image, moderators, admins, and a management OS whose work covers it"
    ),
    "metrics": "admins, and any client in metrics_networks without a credential",
    "admin-or-worker": "admins, and users with work queued or in progress on the machine",
}
USER_SECURITY = [{"bearerToken": []}, {"sessionCookie": []}]
MACHINE_SECURITY = [*USER_SECURITY, {"machineCredential": []}]

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}

# -- the document -----------------------------------------------------------------


def openapi_path(info: RouteInfo) -> tuple[str, list[dict[str, Any]]]:
    """The route's path in OpenAPI form and its path parameters."""
    parameters: list[dict[str, Any]] = []

    def replace(m: re.Match) -> str:
        converter = m.group("converter") or "default"
        if converter not in CONVERTERS:
            raise ValueError(f"{info.endpoint}: no schema for the <{converter}:…> converter")
        parameters.append(
            {
                "name": m.group("name"),
                "in": "path",
                "required": True,
                "schema": dict(CONVERTERS[converter]),
            }
        )
        return "{" + m.group("name") + "}"

    path = _PARAM.sub(replace, info.path)
    if info.branch:
        # Klein serves a branch route's subtree as <path:__rest__>.
        path = path.rstrip("/") + "/{path}"
        parameters.append(
            {
                "name": "path",
                "in": "path",
                "required": True,
                "description": "a file's path below the route",
                "schema": dict(CONVERTERS["default"]),
            }
        )
    return path, parameters


def _summary(handler: Callable, info: RouteInfo) -> tuple[str, str | None]:
    doc = inspect.getdoc(handler)
    if doc:
        first, _, rest = doc.partition("\n\n")
        return " ".join(first.split()), rest.strip() or None
    # No docstring: the handler's name says what it does.
    name = info.endpoint.rsplit(".", 1)[-1].replace("_", " ")
    return name[:1].upper() + name[1:], None


def _return_content(handler: Callable) -> dict[str, Any]:
    annotation = str(inspect.get_annotations(handler).get("return", ""))
    kinds = {part.strip() for part in annotation.split("|")}
    content: dict[str, Any] = {}
    if "dict" in kinds:
        content["application/json"] = {"schema": {"type": "object"}}
    if "list" in kinds:
        content["application/json"] = {"schema": {"type": "array", "items": {}}}
    if "JSONBody" in kinds:  # pxed.web.boot's, rendered by pxed.boot.render
        content["application/json"] = {"schema": {"type": "object"}}
    if "str" in kinds or "TextBody" in kinds:
        content["text/plain"] = {"schema": {"type": "string"}}
    if "HTMLPage" in kinds:  # pxed.web.dashboard's page
        content["text/html"] = {"schema": {"type": "string"}}
    if not content:  # a resource serving a file
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    return content


def _request_body(reads: Reads) -> dict[str, Any] | None:
    content: dict[str, Any] = {}
    if reads.json:
        schema: dict[str, Any] = {"type": "object"}
        if reads.fields:
            schema["properties"] = {name: s for name, (s, _) in sorted(reads.fields.items())}
            required = sorted(name for name, (_, req) in reads.fields.items() if req)
            if required:
                schema["required"] = required
        content["application/json"] = {"schema": schema}
    if reads.upload:
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
        content["multipart/form-data"] = {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        }
    if reads.raw_body:
        content["text/plain"] = {"schema": {"type": "string"}}
    if not content:
        return None
    return {"required": not reads.json_optional, "content": content}


def operation(resource_class: type, attribute: str, info: RouteInfo, method: str) -> dict:
    handler = getattr(resource_class, attribute)
    reads = handler_reads(resource_class, attribute)
    summary, description = _summary(handler, info)
    if info.access not in ACCESS:
        raise ValueError(f"{info.endpoint}: access rule {info.access!r} is not described")
    access = f"Access ({info.access}): {ACCESS[info.access]}."
    op: dict[str, Any] = {
        "operationId": info.endpoint if len(info.methods) == 1 else f"{info.endpoint}.{method}",
        "tags": [info.endpoint.split(".", 1)[0]],
        "summary": summary,
        "description": f"{description}\n\n{access}" if description else access,
        "x-pxed-endpoint": info.endpoint,
        "x-pxed-access": info.access,
    }
    if info.access == "public":
        op["security"] = []
    elif info.access == "machine-or-enlist":
        op["security"] = [*MACHINE_SECURITY, {"enlistCredential": []}]
    elif "machine" in info.access:
        op["security"] = MACHINE_SECURITY
    else:
        op["security"] = USER_SECURITY
    parameters = [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in sorted(reads.query.items())
    ] + [
        {"name": name, "in": "header", "required": False, "schema": schema}
        for name, schema in sorted(reads.headers.items())
    ]
    if parameters:
        op["parameters"] = parameters
    if method not in ("GET", "HEAD"):
        body = _request_body(reads)
        if body is not None:
            op["requestBody"] = body
    successes = sorted(s for s in reads.statuses if 200 <= s < 300) or [200]
    content = _return_content(handler)
    responses: dict[str, Any] = {}
    for status in successes:
        answer: dict[str, Any] = {"description": "success"}
        if method != "HEAD":
            answer["content"] = content
        responses[str(status)] = answer
    for group, what in (("4XX", "refused: the request is wrong"), ("5XX", "the server failed")):
        answer = {"description": what}
        if method != "HEAD":
            answer["content"] = {"application/json": {"schema": _ERROR_REF}}
        responses[group] = answer
    op["responses"] = responses
    return op


def document(resource_classes: Iterable[type]) -> dict[str, Any]:
    """The OpenAPI document of every route the classes declare."""
    paths: dict[str, dict[str, Any]] = {}
    for cls in resource_classes:
        for attribute, info in sorted(router.routes_of(cls), key=lambda r: r[1].path):
            path, parameters = openapi_path(info)
            item = paths.setdefault(path, {})
            if parameters:
                item["parameters"] = parameters
            for method in info.methods:
                item[method.lower()] = operation(cls, attribute, info, method)
    unknown = set(RULES) - set(ACCESS)
    if unknown:
        raise ValueError(f"access rules not described: {sorted(unknown)}")
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "pxed",
            "version": _version(),
            "description": "Bare-metal provisioning: netboot, disk images, boot queues. "
            "Generated from pxed's route table (pxed.web.openapi).",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "pxu_…",
                    "description": "a user's API token",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE.decode(),
                    "description": "a browser session, after signing in with GitHub",
                },
                "machineCredential": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "pxm_…",
                    "description": "the management OS's credential for its work",
                },
                "enlistCredential": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "pxe_…",
                    "description": "an unknown machine's credential to register its inventory",
                },
            },
        },
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pxed")
    except Exception:
        return "0"


class OpenAPIResource:
    """Serves the document of the resources the app is built from."""

    def __init__(self, resource_classes: Iterable[type]) -> None:
        self._classes = tuple(resource_classes)
        self._document: dict[str, Any] | None = None

    @route("/openapi.json", ["GET"], access="public")
    async def openapi(self, request: IRequest) -> dict:
        """The whole API described as an OpenAPI 3.0 document, generated from
        the route table."""
        if self._document is None:
            self._document = document(self._classes)
        return self._document
