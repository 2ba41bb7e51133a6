"""What a handler reads from the request, found by reading its code once
with ``ast`` (for pxed.web.openapi): a JSON body and the typed ``Fields``
accessors called on it (through the helpers it is handed to), an upload,
query parameters, headers and the status it sets."""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pxed.web.body import ID_MAX, INT_MAX

# Fields accessor (pxed.web.body.Fields) -> JSON schema of the value
_ACCESSORS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer", "minimum": -(2**63), "maximum": INT_MAX},
    "bool": {"type": "boolean"},
    "list": {"type": "array"},
    "object": {"type": "object"},
    "raw": {},
    "has": {},
}
# Headers a handler reads that OpenAPI describes elsewhere (security) or
# that are the transport's (body length).
_NOT_PARAMETERS = {"authorization", "content-length", "content-type", "cookie", "accept"}


@dataclass
class Reads:
    """What a handler (and the helpers it calls) reads from the request."""

    json: bool = False
    json_optional: bool = False
    upload: bool = False
    raw_body: bool = False
    # name -> (schema, required)
    fields: dict[str, tuple[dict[str, Any], bool]] = field(default_factory=dict)
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)
    statuses: set[int] = field(default_factory=set)

    def add_field(self, name: str, schema: dict[str, Any], required: bool) -> None:
        old = self.fields.get(name)
        if old is None:
            self.fields[name] = (dict(schema), required)
            return
        old_schema, old_required = old
        if not old_schema:
            merged = dict(schema)
        elif not schema or old_schema.get("type") == schema.get("type"):
            merged = old_schema
        else:  # read as different types in different forms: either is taken
            merged = {}
        self.fields[name] = (merged, old_required or required)


# -- reading the handlers -------------------------------------------------------


@cache
def _tree(func: Callable) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return None
    node = ast.parse(source).body[0]
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def _const(node: ast.AST | None, consts: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value if isinstance(value, str) else None


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _names(node: ast.AST) -> set[str]:
    """The plain names an expression may evaluate to (``a or b``, ``x if c else y``)."""
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.BoolOp):
        return set().union(*(_names(v) for v in node.values))
    if isinstance(node, ast.IfExp):
        return _names(node.body) | _names(node.orelse)
    return set()


def _calls_read_json(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "read_json"
        for n in ast.walk(node)
    )


class _Reader:
    """Walks a handler and, through calls by name, the pxed functions and
    methods it calls, noting what each reads from the request."""

    def __init__(self, owner: type) -> None:
        self._owner = owner
        self._seen: set[tuple[Any, frozenset, tuple]] = set()
        self.reads = Reads()

    def read(self, func: Callable, bodies: frozenset[str], consts: dict[str, Any], depth=0):
        key = (func, bodies, tuple(sorted(consts.items(), key=lambda kv: kv[0])))
        if key in self._seen or depth > 6:
            return
        self._seen.add(key)
        tree = _tree(func)
        if tree is None:
            return
        module = sys.modules.get(getattr(func, "__module__", ""), None)
        scope = vars(module) if module is not None else {}
        bodies = set(bodies)
        conditional = _conditional_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name):
                    if _calls_read_json(node.value) or _names(node.value) & bodies:
                        bodies.add(target.id)
        query_dicts = {
            t.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "query_args"
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in ("BoundedBody",):
                self.reads.raw_body = True
            if not isinstance(node, ast.Call):
                continue
            self._call(node, scope, bodies, consts, query_dicts, conditional, depth)

    def _call(self, call, scope, bodies, consts, query_dicts, conditional, depth) -> None:
        reads = self.reads
        func = call.func
        args = call.args
        if isinstance(func, ast.Name):
            name = func.id
            if name == "read_json":
                reads.json = True
                if id(call) in conditional:
                    reads.json_optional = True
                return
            if name in ("receive", "receive_checked"):
                reads.upload = True
            if name == "int_arg" and len(args) >= 2:
                param = _text(_const(args[1], consts))
                if param:
                    minimum = _const(_keyword(call, "minimum"), consts)
                    if minimum is None and len(args) >= 4:
                        minimum = _const(args[3], consts)
                    lowest = 1 if minimum is None else minimum
                    reads.query[param] = {"type": "integer", "minimum": lowest, "maximum": ID_MAX}
                return
            if name == "query_arg" and len(args) >= 2:
                param = _text(_const(args[1], consts))
                if param:
                    reads.query.setdefault(param, {"type": "string"})
                return
            if name == "header" and len(args) >= 2:
                param = _text(_const(args[1], consts))
                if param and param.lower() not in _NOT_PARAMETERS:
                    reads.headers.setdefault(param, {"type": "string"})
            self._follow(scope.get(name), call, bodies, consts, depth)
            return
        if not isinstance(func, ast.Attribute):
            return
        receiver = func.value
        # request.setResponseCode(201)
        if func.attr == "setResponseCode" and args:
            status = _const(args[0], consts)
            if isinstance(status, int):
                reads.statuses.add(status)
            return
        # request.args.get(b"Name"), args.get("target") (args = query_args(request))
        if func.attr == "get" and args:
            is_query = (isinstance(receiver, ast.Attribute) and receiver.attr == "args") or (
                isinstance(receiver, ast.Name) and receiver.id in query_dicts
            )
            param = _text(_const(args[0], consts))
            if is_query and param:
                reads.query.setdefault(param, {"type": "string"})
                return
        # body.str("Name", required=True): a field of the JSON body
        if func.attr in _ACCESSORS and args and _names(receiver) & bodies:
            name = _text(_const(args[0], consts))
            if name:
                required = _const(_keyword(call, "required"), consts) is True
                schema = dict(_ACCESSORS[func.attr])
                if func.attr == "str":
                    limit = _const(_keyword(call, "max_length"), consts)
                    schema["maxLength"] = limit if isinstance(limit, int) else 255
                reads.add_field(name, schema, required)
            return
        # self._helper(...)
        if isinstance(receiver, ast.Name) and receiver.id == "self":
            self._follow(getattr(self._owner, func.attr, None), call, bodies, consts, depth)

    def _follow(self, target, call, bodies, consts, depth) -> None:
        """Read a pxed function the handler calls, knowing which of its
        parameters get the JSON body and which get constants."""
        if isinstance(target, types.MethodType):
            target = target.__func__
        if not isinstance(target, types.FunctionType):
            return
        if not target.__module__.startswith("pxed.") or target.__module__ == __name__:
            return
        if target.__module__ == "pxed.web.body":
            return  # the readers themselves, matched by name above
        try:
            params = list(inspect.signature(target).parameters)
        except (TypeError, ValueError):
            return
        if params and params[0] == "self":
            params = params[1:]
        passed: list[tuple[str, ast.AST]] = list(zip(params, call.args, strict=False))
        passed += [(kw.arg, kw.value) for kw in call.keywords if kw.arg in params]
        inner_bodies = set()
        inner_consts = {}
        for param, value in passed:
            if _names(value) & bodies or (
                isinstance(value, ast.Call) and _calls_read_json(value) and _is_read(value)
            ):
                inner_bodies.add(param)
                if isinstance(value, ast.Call):  # f(read_json(request))
                    self.reads.json = True
            const = _const(value, consts)
            if isinstance(const, (str, bytes, int, bool)):
                inner_consts[param] = const
        self.read(target, frozenset(inner_bodies), inner_consts, depth + 1)


def _is_read(call: ast.Call) -> bool:
    return isinstance(call.func, ast.Name) and call.func.id == "read_json"


def _conditional_nodes(tree: ast.AST) -> set[int]:
    """ids of the calls made only on some paths (inside ``x if c else y``)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.IfExp):
            for branch in (node.body, node.orelse):
                found.update(id(n) for n in ast.walk(branch))
    return found


def handler_reads(resource_class: type, attribute: str) -> Reads:
    reader = _Reader(resource_class)
    reader.read(getattr(resource_class, attribute), frozenset(), {})
    return reader.reads
