"""BMC passwords sealed for the database: AES-256-GCM (the ``cryptography``
package) with the server's power key, a random 96-bit nonce per password.
A password is sealed in the web layer as it arrives (before the machine it
goes to may even exist) and opened only by the power service, on the way
to the BMC."""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "v1:"
AAD = b"pxed bmc password"


class SealError(Exception):
    """A sealed password that does not open with this key."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key[:32])

    def seal(self, password: str) -> str:
        if not password:
            return ""
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, password.encode(), AAD)
        return PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str) -> str:
        if not sealed:
            return ""
        if not sealed.startswith(PREFIX):
            raise SealError("the stored BMC password is in an unknown format; set it again")
        try:
            raw = base64.b64decode(sealed[len(PREFIX) :])
            plain = self._aead.decrypt(raw[:12], raw[12:], AAD)
        except (InvalidTag, ValueError):
            raise SealError(
                "the stored BMC password does not open with this server's power.key"
                " (a new key?); set the password again"
            ) from None
        return plain.decode()
