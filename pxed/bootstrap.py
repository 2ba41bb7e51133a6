"""First start: with no admin in the database, create one and leave its API
token in ``<data-dir>/admin.token`` (mode 0600), so the quick start works
without GitHub."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import sqlalchemy as sa

from pxed.db import tokens, users

TOKEN_FILE = "admin.token"
# The key machine credentials are derived from (pxed.db.credentials).
MACHINE_KEY_FILE = "machine.key"


def write_secret(path: Path, text: str) -> None:
    """Create *path* readable by its owner only, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def thd_bootstrap(conn: sa.Connection) -> tuple[str, str] | None:
    """(username, token) of a new admin if there was none, else None."""
    if users.thd_count_admins(conn) > 0:
        return None
    username = "admin"
    n = 0
    while users.thd_get(conn, username) is not None:
        n += 1
        username = f"admin-{n}"
    users.thd_create(
        conn, username, users.UserFields(name="Administrator", role="admin"), actor="system"
    )
    _, token = tokens.thd_create_token(conn, username, "bootstrap", actor="system")
    return username, token


def bootstrap_admin(engine: sa.Engine, data_dir: Path) -> tuple[str, Path] | None:
    with engine.begin() as conn:
        created = thd_bootstrap(conn)
        if created is None:
            return None
        username, token = created
        path = data_dir / TOKEN_FILE
        # Written inside the transaction: if the file cannot be written, no
        # admin is left behind whose token nobody knows.
        write_secret(path, token + "\n")
    return username, path


def machine_key(data_dir: Path) -> bytes:
    """The server's key for machine credentials, ``<data-dir>/machine.key``
    (mode 0600), made when missing or unreadable.  Tokens derived from a
    lost key no longer match their hashes: the next boot answer mints new
    ones."""
    path = Path(data_dir) / MACHINE_KEY_FILE
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        key = b""
    if len(key) < 32:
        key = secrets.token_bytes(32)
        write_secret(path, key.hex() + "\n")
    return key
