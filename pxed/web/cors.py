"""CORS for the configured browser origins only.  Credentials (cookies,
Authorization) are allowed for those origins; others get no CORS headers,
so browsers keep their responses from scripts."""

from __future__ import annotations

from twisted.web.iweb import IRequest

ALLOW_METHODS = b"GET, HEAD, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = (
    b"Authorization, Content-Type, Content-Digest, X-Checksum-Sha256, X-BAAS-NewVersion, Range,"
    b" If-Range"
)
EXPOSE_HEADERS = b"Content-Disposition, Content-Length, Content-Range, ETag"
MAX_AGE = b"600"


class CORS:
    def __init__(self, origins: tuple[str, ...]) -> None:
        self._origins = frozenset(o.rstrip("/").encode() for o in origins)

    def apply(self, request: IRequest) -> bool:
        """Add CORS headers; True if the request was a preflight, now answered."""
        request.responseHeaders.addRawHeader(b"vary", b"Origin")
        origin = request.getHeader(b"origin")
        allowed = origin is not None and origin in self._origins
        if allowed:
            request.setHeader(b"access-control-allow-origin", origin)
            request.setHeader(b"access-control-allow-credentials", b"true")
            request.setHeader(b"access-control-expose-headers", EXPOSE_HEADERS)
        preflight = (
            request.method == b"OPTIONS"
            and origin is not None
            and request.getHeader(b"access-control-request-method") is not None
        )
        if preflight:
            if allowed:
                request.setResponseCode(204)
                request.setHeader(b"access-control-allow-methods", ALLOW_METHODS)
                request.setHeader(b"access-control-allow-headers", ALLOW_HEADERS)
                request.setHeader(b"access-control-max-age", MAX_AGE)
            else:
                request.setResponseCode(403)
            request.setHeader(b"content-length", b"0")
            request.finish()
        return preflight
