"""BootInform: GET /machine/{mac}/boot takes the machine's next queued work
and answers it; 404 means no work."""

from __future__ import annotations

from collections.abc import Callable

from pxed.agent.client import Client, HTTPError, error_text, retrying
from pxed.agent.errors import Failed
from pxed.agent.wire import BootInform, WireError


class NoWork(Exception):
    """pxed has no work for this machine (its answer's reason)."""


def ask(
    client: Client, mac: str, tries: int, delay: float, say: Callable[[str], None]
) -> BootInform:
    """The work; NoWork on a 404, Unreachable once *tries* tries failed to
    connect, Failed for any other answer that is not work."""
    try:
        answer = retrying(
            lambda: client.request("GET", f"/machine/{mac}/boot"),
            tries,
            delay,
            "asking pxed for work",
            say,
        )
    except HTTPError as e:
        if e.status == 404:
            raise NoWork(error_text(e.body, 300)) from None
        raise Failed(str(e)) from None
    try:
        return BootInform.from_json(answer.json())
    except (ValueError, WireError) as e:
        raise Failed(f"cannot parse the answer: {e}") from None
