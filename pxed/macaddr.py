"""MAC addresses: pxed stores and answers with lower-case colon form."""

from __future__ import annotations

import re

from pxed.errors import BadRequest

_SEPARATED = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
_BARE = re.compile(r"^[0-9a-f]{12}$")


def normalise(value: object) -> str:
    """``AA-BB-CC-DD-EE-FF``, ``aa:bb:…`` or ``aabbccddeeff`` → ``aa:bb:cc:dd:ee:ff``.

    Raises BadRequest for anything else."""
    if not isinstance(value, str):
        raise BadRequest("MAC address must be a string")
    text = value.strip().lower()
    if _SEPARATED.match(text):
        return text.replace("-", ":")
    if _BARE.match(text):
        return ":".join(text[i : i + 2] for i in range(0, 12, 2))
    raise BadRequest(f"not a MAC address: {value[:40]!r}")
