"""HTTP to pxed with the machine credential: small JSON requests, a
streaming GET read into the caller's buffers, and a chunked POST whose body
the caller produces (and can abort, so that pxed stores nothing).  One
connection per request: the agent makes few, and a fresh one survives the
server or the network having dropped the last."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

JSON_LIMIT = 16 * 1024 * 1024
# Waiting for the server: it answers a small request at once, and an
# upload's answer once it has hashed, fsynced and renamed the file.
TIMEOUT = 60.0
UPLOAD_TIMEOUT = 600.0


class Unreachable(OSError):
    """No connection to pxed (refused, no route, name not found, timeout)."""


class BodyFailed(Exception):
    """Producing an upload's body failed; the upload was aborted.  The
    producer's error is ``cause``."""

    def __init__(self, cause: Exception) -> None:
        self.cause = cause
        super().__init__(str(cause))


class HTTPError(Exception):
    """pxed answered with an error status."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {error_text(body)}")


def error_text(body: bytes, limit: int = 500) -> str:
    """pxed's ``{"error": "..."}``, else the start of the body."""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return data["error"][:limit]
    except ValueError:
        pass
    return body[:limit].decode("utf-8", "replace").strip()


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise ValueError(
                f"the answer is not JSON ({e}): {error_text(self.body, 200)}"
            ) from None


class Download:
    """An open GET: ``readinto`` fills a buffer (whole, except at the end);
    ``length`` is what the server said it sends (None if it did not)."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse):
        self._conn = conn
        self._response = response
        self.length: int | None = response.length
        self.received = 0

    def readinto(self, buffer: memoryview) -> int:
        n = self._response.readinto(buffer)
        self.received += n
        return n

    @property
    def complete(self) -> bool:
        """All the announced bytes came (http.client does not say when a
        connection closed before Content-Length was reached)."""
        return self.length is None or self.received == self.length

    def close(self) -> None:
        self._conn.close()


class Client:
    def __init__(self, base_url: str, token: str, timeout: float = TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # never the credential
        return f"Client({self.base_url!r})"

    def url(self, path_or_url: str) -> str:
        return urljoin(self.base_url + "/", path_or_url)

    def _connect(self, url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            import ssl  # only for https: a plain-http management OS needs no TLS

            conn = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        # Bodies sent from a file go in large writes.
        conn.blocksize = 1 << 20
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise Unreachable(f"cannot connect to {parts.netloc}: {_reason(e)}") from None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return conn, target

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", **(extra or {})}

    def request(
        self,
        method: str,
        path_or_url: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        ok: Iterable[int] = (200, 201),
    ) -> Answer:
        """*body* as JSON (if given); the answer, or HTTPError if its status
        is not one of *ok*."""
        conn, target = self._connect(self.url(path_or_url), timeout or self.timeout)
        try:
            headers = self._headers({"Accept": "application/json"})
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, target, body=data, headers=headers)
            response = conn.getresponse()
            answer = Answer(response.status, response.read(JSON_LIMIT))
        except (OSError, http.client.HTTPException) as e:
            raise OSError(f"{method} {target}: {_reason(e)}") from None
        finally:
            conn.close()
        if answer.status not in ok:
            raise HTTPError(answer.status, answer.body)
        return answer

    def download(self, path_or_url: str, timeout: float | None = None) -> Download:
        """An open GET of *path_or_url*, status 200 checked."""
        conn, target = self._connect(self.url(path_or_url), timeout or self.timeout)
        try:
            conn.request("GET", target, headers=self._headers())
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise OSError(f"GET {target}: {_reason(e)}") from None
        if response.status != 200:
            body = response.read(4096)
            conn.close()
            raise HTTPError(response.status, body)
        return Download(conn, response)

    def upload(
        self,
        path_or_url: str,
        chunks: Iterable[bytes | memoryview],
        *,
        length: int | None = None,
        sent: Callable[[bytes | memoryview], None] | None = None,
        timeout: float = UPLOAD_TIMEOUT,
    ) -> Answer:
        """POST the bytes *chunks* yields as a raw body: with Content-Length
        if *length* is given, else in chunked transfer encoding.  If
        *chunks* raises, the connection is dropped before the body ends, so
        pxed sees an aborted upload and keeps nothing, and BodyFailed
        carries the error on.
        *sent* sees each chunk once it is sent (to hash what went)."""
        conn, target = self._connect(self.url(path_or_url), timeout)
        headers = self._headers(
            {"Content-Type": "application/octet-stream", "Accept": "application/json"}
        )
        if length is None:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(length)
        try:
            conn.putrequest("POST", target, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            sock = conn.sock
            produced = iter(chunks)
            while True:
                try:
                    chunk = next(produced)
                except StopIteration:
                    break
                except Exception as e:
                    _abort(conn)
                    raise BodyFailed(e) from e
                except BaseException:
                    _abort(conn)
                    raise
                if not len(chunk):
                    continue
                try:
                    if length is None:
                        sock.sendall(b"%x\r\n" % len(chunk))
                        sock.sendall(chunk)
                        sock.sendall(b"\r\n")
                    else:
                        sock.sendall(chunk)
                except OSError as e:
                    # pxed may have answered (a refusal) and closed while
                    # the body was still going: its answer says why.
                    raise OSError(
                        f"sending to {target} failed: {_reason(e)}{_late(conn)}"
                    ) from None
                if sent is not None:
                    sent(chunk)
            if length is None:
                sock.sendall(b"0\r\n\r\n")
            response = conn.getresponse()
            answer = Answer(response.status, response.read(JSON_LIMIT))
        except (OSError, http.client.HTTPException) as e:
            raise OSError(_reason(e)) from None
        finally:
            conn.close()
        if answer.status not in (200, 201):
            raise HTTPError(answer.status, answer.body)
        return answer


def _abort(conn: http.client.HTTPConnection) -> None:
    """Drop the connection at once (a reset, not an orderly end)."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    conn.close()


def _late(conn: http.client.HTTPConnection) -> str:
    try:
        conn.sock.settimeout(2)
        response = conn.getresponse()
        return f" (pxed answered HTTP {response.status}: {error_text(response.read(4096))})"
    except (OSError, http.client.HTTPException, AttributeError):
        return ""


def _reason(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def retrying(
    call: Callable[[], Any], tries: int, delay: float, what: str, say: Callable[[str], None]
) -> Any:
    """*call()*, tried again on Unreachable (the network may still be
    coming up) up to *tries* times, *delay* seconds apart."""
    for attempt in range(1, tries + 1):
        try:
            return call()
        except Unreachable as e:
            if attempt == tries:
                raise
            say(f"{what}: {e}; trying again in {delay:g} s ({attempt}/{tries})")
            time.sleep(delay)
    raise AssertionError("not reached")
