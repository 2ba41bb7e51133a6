"""Random secrets and how they are stored: only their sha256 is kept, and
comparisons are constant-time."""

from __future__ import annotations

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
