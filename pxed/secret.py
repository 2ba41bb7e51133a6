"""Random secrets and how they are stored: only their sha256 is kept, and
comparisons are constant-time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# The prefix says what a bearer token is, so the server looks it up in the
# right table and a leaked token is recognisable in a scan.
USER_TOKEN = "pxu_"
MACHINE_TOKEN = "pxm_"
# An unknown machine's, to enlist (pxed.db.enlist).
ENLIST_TOKEN = "pxe_"


def new(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def derive(key: bytes, prefix: str, message: str) -> str:
    """A token derived from *key* and *message* (HMAC-SHA256), with
    *prefix*: tokens the database alone does not give away."""
    mac = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return prefix + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def derived_matches(token: str, token_hash: str) -> str | None:
    """*token* if it is the one *token_hash* was stored for, else None."""
    return token if same(digest(token), token_hash) else None
