"""Errors that reach the client.  Raised anywhere (query functions included);
the web layer turns each into JSON ``{"error": message}`` with its status."""

from __future__ import annotations


class ApiError(Exception):
    status = 500

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


class ServiceUnavailable(ApiError):
    status = 503
