"""SSH public keys as users paste them (one ``authorized_keys`` line without
options: ``<type> <base64> [comment]``), checked by the cryptography
library before pxed keeps one: the key is written into every machine the
user deploys, so a line that sshd would ignore must be refused here, not
found out at the console."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from pxed.db.errors import InvalidError

# Longer than an RSA 16384-bit key with a long comment; a bound on what a
# client can make pxed parse and store.
MAX_LINE = 8192
MAX_COMMENT = 255
# OpenSSH refuses RSA below 1024 bits; NIST and OpenSSH's own ssh-keygen
# default argue for 2048 at least.
MIN_RSA_BITS = 2048
TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)


@dataclass(frozen=True)
class PublicKey:
    type: str
    # The base64 blob as given: the line is rebuilt from it unchanged.
    blob: str
    comment: str
    bits: int

    @property
    def fingerprint(self) -> str:
        """As ``ssh-keygen -l`` prints it: SHA256 of the blob, base64
        without padding."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def line(self) -> str:
        return line(self.type, self.blob, self.comment)


def line(key_type: str, blob: str, comment: str) -> str:
    """The key as an ``authorized_keys`` line."""
    return " ".join(part for part in (key_type, blob, comment) if part)


def parse(text: str) -> PublicKey:
    """The key on *text*, or InvalidError saying what is wrong with it."""
    if len(text) > MAX_LINE:
        raise InvalidError(f"Key: longer than {MAX_LINE} characters")
    text = text.strip()
    if "\n" in text or "\r" in text:
        raise InvalidError("Key: one key, on one line")
    parts = text.split(None, 2)
    if len(parts) < 2:
        raise InvalidError("Key: expected '<type> <base64> [comment]', e.g. 'ssh-ed25519 AAAA…'")
    key_type, blob = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) == 3 else ""
    if key_type not in TYPES:
        # An authorized_keys line with options starts with them, not a type.
        raise InvalidError(f"Key: type {key_type[:40]!r} is not one of {', '.join(TYPES)}")
    if len(comment) > MAX_COMMENT:
        raise InvalidError(f"Key: comment longer than {MAX_COMMENT} characters")
    if any(ord(c) < 32 for c in comment):
        raise InvalidError("Key: control characters in the comment")
    try:
        key = load_ssh_public_key(f"{key_type} {blob}".encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise InvalidError(f"Key: not a valid {key_type} public key") from e
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            raise InvalidError(f"Key: RSA keys need at least {MIN_RSA_BITS} bits, not {bits}")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        bits = key.curve.key_size
    elif isinstance(key, ed25519.Ed25519PublicKey):
        bits = 256
    else:  # pragma: no cover - TYPES admits nothing else
        raise InvalidError(f"Key: {key_type} keys are not accepted")
    # The blob names its own type; a mismatch (an RSA blob labelled
    # ssh-ed25519) is what load_ssh_public_key refuses above.
    return PublicKey(key_type, blob, comment, bits)
