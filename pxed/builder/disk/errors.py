"""How disk assembly reports: one-line errors for the build log, and the
callback that receives its progress lines."""

from __future__ import annotations

from collections.abc import Callable

# Receives progress lines ("pxed: unpacking the root filesystem").
Log = Callable[[str], None]


class AssemblyError(Exception):
    """The image could not be made; *message* is one line for the build log."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EmptyRootfs(AssemblyError):
    """The exported filesystem holds no regular file."""

    def __init__(self, message: str = "the exported root filesystem is empty") -> None:
        super().__init__(message)
