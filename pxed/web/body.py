"""Reading request bodies: JSON objects with field names matched
case-insensitively (as the original's Go decoder did), and typed fields
whose errors name the field."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from twisted.web.iweb import IRequest

from pxed.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

MAX_JSON_BODY = 1024 * 1024
# No request of pxed's nests deeper than a few levels; a deeper body is
# refused rather than walked (Python's parser recurses per level).
MAX_JSON_DEPTH = 32
# Integers are stored in 64-bit signed columns, except ids and version
# numbers (sa.Integer: 32 bits on PostgreSQL, where a larger one in a query
# is an error, not "no such row"); beyond them is an error of the
# client's, not the database's.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
ID_MAX = 2**31 - 1

_MISSING = object()


class Fields:
    """A JSON object whose keys are matched without regard to case."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = {k.lower(): v for k, v in data.items()}

    def has(self, name: str) -> bool:
        return name.lower() in self._data

    def raw(self, name: str, default: Any = None) -> Any:
        return self._data.get(name.lower(), default)

    def _get(self, name: str, kind: type | tuple[type, ...], what: str, required: bool) -> Any:
        value = self._data.get(name.lower(), _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise BadRequest(f"{name}: required")
            return None
        # bool is an int in Python; JSON true is not a number.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadRequest(f"{name}: must be {what}")
        return value

    def str(self, name: str, required: bool = False, max_length: int = 255) -> str | None:
        value = self._get(name, str, "a string", required)
        if value is not None and len(value) > max_length:
            raise BadRequest(f"{name}: longer than {max_length} characters")
        return value if value is None else _text(value, name)

    def bool(self, name: str, required: bool = False) -> bool | None:
        return self._get(name, bool, "true or false", required)

    def int(self, name: str, required: bool = False, bits: int = 64) -> int | None:
        """An integer of *bits* bits, signed: 32 for an id or a version."""
        value = self._get(name, int, "an integer", required)
        if value is not None and not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            raise BadRequest(f"{name}: out of range (a {bits}-bit signed integer)")
        return value

    def list(self, name: str, required: bool = False) -> list | None:
        return self._get(name, list, "a list", required)

    def object(self, name: str, required: bool = False) -> Fields | None:
        value = self._get(name, dict, "an object", required)
        return None if value is None else Fields(value)


def read_json(request: IRequest) -> Fields:
    """The request body as a JSON object, or a 4xx saying what is wrong."""
    # Any Content-Type is read as JSON, as the original did: `curl -d` sends
    # application/x-www-form-urlencoded unless told otherwise.
    length = request.getHeader("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_JSON_BODY:
        raise PayloadTooLarge(f"JSON bodies are limited to {MAX_JSON_BODY} bytes")
    if not isinstance(request.content, BoundedBody):
        raise UnsupportedMediaType("expected a JSON body, not an upload")
    request.content.seek(0)
    raw = request.content.read()
    if request.content.overflow:
        raise PayloadTooLarge(f"JSON bodies are limited to {MAX_JSON_BODY} bytes")
    if not raw.strip():
        raise BadRequest("request body is empty; expected a JSON object")
    if _nesting(raw) > MAX_JSON_DEPTH:
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BadRequest(f"malformed JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object")
    return Fields(data)


# A whole string (its brackets are not structure) or one bracket.
_STRUCTURE = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[{]|[\]}]', re.DOTALL)


def _nesting(raw: bytes) -> int:
    """How deep *raw*'s arrays and objects nest, found without parsing it."""
    depth = deepest = 0
    for m in _STRUCTURE.finditer(raw):
        c = m.group()
        if c in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif c in (b"]", b"}"):
            depth -= 1
    return deepest


class BoundedBody:
    """Bodies of other requests (JSON): kept in memory up to *limit* bytes;
    beyond that the rest is dropped and ``overflow`` set (a 413 follows)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()
        self._pos = 0
        self.overflow = False

    def write(self, data: bytes) -> None:
        if self.overflow:
            return
        if len(self._data) + len(data) > self._limit:
            self.overflow = True
            self._data.clear()
            return
        self._data += data

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = offset if whence == 0 else len(self._data) + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        out = bytes(self._data[self._pos : end])
        self._pos += len(out)
        return out

    def close(self) -> None:
        self._data.clear()


# -- headers and query parameters ---------------------------------------------


def header(request: IRequest, name: str) -> str | None:
    """A request header's value as text, or None if absent; a value that
    is not UTF-8 is the client's error (400), never a decoding traceback."""
    value = request.getHeader(name.encode("ascii"))
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{name}: not valid UTF-8") from None


def query_arg(request: IRequest, name: str) -> str | None:
    """The first value of a query parameter as text (None if absent)."""
    values = request.args.get(name.encode()) if request.args else None
    if not values:
        return None
    try:
        return _text(values[0].decode("utf-8"), name)
    except UnicodeDecodeError:
        raise BadRequest(f"{name}: not valid UTF-8") from None


def parse_time(text: str, name: str) -> dt.datetime:
    """An ISO 8601 time (``Z`` or an offset; without one, UTC), aware."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name}: expected an ISO 8601 time, e.g. 2026-01-31T12:00:00Z") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def query_args(request: IRequest) -> dict[str, str]:
    """Every query parameter's first value, as text."""
    out = {}
    for key, values in (request.args or {}).items():
        try:
            name = key.decode("utf-8")
            out[name] = _text(values[0].decode("utf-8"), name)
        except UnicodeDecodeError:
            raise BadRequest("query: not valid UTF-8") from None
    return out


def _text(value: str, name: str) -> str:
    # PostgreSQL's text cannot hold a NUL; no name or value of ours has one.
    if "\x00" in value:
        raise BadRequest(f"{name}: must not contain NUL")
    return value


def int_arg(args: dict[str, str], name: str, default: int | None, minimum: int = 1) -> int | None:
    """A query parameter that is an integer from *minimum* up to ID_MAX (a
    count or an id)."""
    if name not in args:
        return default
    text = args[name]
    if not re.fullmatch(r"-?[0-9]+", text):
        raise BadRequest(f"{name}: must be an integer")
    # Compared by length first: Python refuses to convert very long digit
    # strings, and nothing that long is in range anyway.
    if len(text.lstrip("-").lstrip("0")) > 19 or int(text) > ID_MAX:
        if text.startswith("-"):
            raise BadRequest(f"{name}: must be at least {minimum}")
        raise BadRequest(f"{name}: must be at most {ID_MAX}")
    value = int(text)
    if value < minimum:
        raise BadRequest(f"{name}: must be at least {minimum}")
    return value
