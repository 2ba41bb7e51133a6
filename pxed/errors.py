"""Errors that reach the client.  Raised anywhere (query functions included);
the web layer turns each into JSON ``{"error": message}`` with its status."""

from __future__ import annotations

import json


class ApiError(Exception):
    status = 500
    # Seconds, sent as Retry-After: the client may try again then.
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class BadGateway(ApiError):
    """A service we depend on (GitHub, say) failed or gave an unusable answer."""

    status = 502


class GatewayTimeout(ApiError):
    """A service we depend on (a machine's BMC) did not answer in time."""

    status = 504


class ServiceUnavailable(ApiError):
    status = 503


class DatabaseBusy(ServiceUnavailable):
    """A lock held elsewhere kept the database from answering in time."""

    retry_after = 1

    def __init__(self, message: str = "the database is busy; try again shortly") -> None:
        super().__init__(message)


class InsufficientStorage(ApiError):
    """No room on the server's disk (the data dir or the database)."""

    status = 507


def error_json(message: str) -> bytes:
    """The body of every error answer: ``{"error": message}``."""
    return json.dumps({"error": message}).encode() + b"\n"
