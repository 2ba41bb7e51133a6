"""What the database layer refuses, in its own terms: no HTTP here.  The
web layer answers each kind with its status in one place
(pxed.web.router.handle_errors); pxed-admin prints the message."""

from __future__ import annotations


class DomainError(Exception):
    """A refusal whose message is fit to show the caller as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(DomainError):
    """What the call names does not exist."""


class ConflictError(DomainError):
    """It exists, but its state does not allow this (already taken, still
    in use, the last admin, not in progress)."""


class InvalidError(DomainError):
    """A value given is not acceptable (a malformed name, an unknown role,
    an image listed twice)."""


class NotPermittedError(DomainError):
    """The caller may not use what it names (another user's image)."""
