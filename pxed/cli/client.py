"""The one HTTP client of pxectl (httpx), and its errors: every failure
becomes one line naming the problem and an exit code that says which kind
(see EXIT_CODES)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import click
import httpx

from pxed.cli import config

EXIT_CODES = {
    0: "ok",
    1: "the server refused or failed the request",
    2: "usage: bad arguments or options",
    3: "not logged in, or the token is refused (401/403)",
    4: "not found (404)",
    5: "could not connect to the server",
}
SERVER_ERROR, USAGE, AUTH, NOT_FOUND, CONNECTION = 1, 2, 3, 4, 5


class CliError(click.ClickException):
    def __init__(self, message: str, exit_code: int = SERVER_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def server_error(response: httpx.Response) -> CliError:
    """The server's {"error"} with the status; 401/403 and 404 get codes of their own."""
    try:
        message = response.json()["error"]
    except Exception:
        message = response.text.strip().splitlines()[0] if response.text.strip() else ""
    message = f"{response.status_code} {response.reason_phrase}: {message}".rstrip(": ")
    code = {401: AUTH, 403: AUTH, 404: NOT_FOUND}.get(response.status_code, SERVER_ERROR)
    return CliError(message, code)


class Api:
    """A pxed server: *url* and the bearer *token*."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
        )

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise CliError(f"cannot reach {self.url}: {e or type(e).__name__}", CONNECTION) from e
        if response.is_error:
            raise server_error(response)
        return response

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw).json()

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return _json(self.request("POST", path, json=body, **kw))

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return _json(self.request("PUT", path, json=body, **kw))

    def delete(self, path: str, **kw: Any) -> Any:
        return _json(self.request("DELETE", path, **kw))

    def post_raw(self, path: str, content: Any, headers: dict[str, str]) -> Any:
        """A body streamed from *content* (bytes or an iterator of them)."""
        return _json(self.request("POST", path, content=content, headers=headers))

    def stream(self, method: str, path: str, **kw: Any):
        """A streamed exchange (a context manager); errors as ``request``'s."""
        return _Stream(self, method, path, kw)

    def me(self) -> dict:
        return self.get("/user/me")

    def events(self, **query: str) -> EventStream:
        """``GET /events/stream`` (a context manager; connected on entry,
        so nothing that happens after it is missed): iterate for
        ``(kind, data)`` as things happen."""
        return EventStream(self, query)


# Seconds without a byte before a stream counts as lost: the server sends
# a keep-alive every 15 s (event_stream_keepalive).
STREAM_SILENCE = 120.0


class EventStream:
    """Server-sent events as ``(event, data)``, data parsed as JSON; each
    keep-alive comment as ``(":", "keepalive")``, so that a loop over it
    gets a turn to check its deadline at least that often."""

    def __init__(self, api: Api, query: dict[str, str]) -> None:
        timeout = httpx.Timeout(30.0, read=STREAM_SILENCE)
        self._stream = api.stream("GET", "/events/stream", params=query, timeout=timeout)

    def __enter__(self) -> EventStream:
        self._response = self._stream.__enter__()
        return self

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        self._stream.__exit__(kind, error, tb)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        kind, data = "message", []
        for line in self._response.iter_lines():
            if line.startswith(":"):
                yield ":", line[1:].strip()
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif not line and data:
                yield kind, json.loads("\n".join(data))
                kind, data = "message", []


class _Stream:
    """``Api.stream``: an error answer or a broken connection is a CliError."""

    def __init__(self, api: Api, method: str, path: str, kw: dict) -> None:
        self.api, self.method, self.path, self.kw = api, method, path, kw

    def __enter__(self) -> httpx.Response:
        try:
            self.ctx = self.api.http.stream(self.method, self.path, **self.kw)
            response = self.ctx.__enter__()
        except httpx.TransportError as e:
            raise CliError(f"cannot reach {self.api.url}: {e}", CONNECTION) from e
        if response.is_error:
            response.read()
            self.ctx.__exit__(None, None, None)
            raise server_error(response)
        return response

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        self.ctx.__exit__(kind, error, tb)
        if isinstance(error, httpx.TransportError):
            # Lost while the body streamed: one line too, not a traceback.
            message = f"connection to {self.api.url} lost: {error or kind.__name__}"
            raise CliError(message, CONNECTION) from error


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def api() -> Api:
    """The server pxectl is logged in to (config file, or PXED_URL/PXED_TOKEN)."""
    settings = config.load()
    if not settings.url or not settings.token:
        raise CliError(
            "not logged in: run `pxectl login URL` (or set PXED_URL and PXED_TOKEN)", AUTH
        )
    return Api(settings.url, settings.token)
