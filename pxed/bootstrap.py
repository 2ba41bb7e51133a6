"""First start: with no admin in the database, create one and leave its API
token in ``<data-dir>/admin.token`` (mode 0600), so the quick start works
without GitHub."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import sqlalchemy as sa

from pxed.db import tokens, users

TOKEN_FILE = "admin.token"
# The key BMC passwords are sealed with (pxed.power.secretbox).
POWER_KEY_FILE = "power.key"


def _write_temp(path: Path, text: str) -> Path:
    """*text* in a new file beside *path* (a name no other process has),
    owner-readable only, fsynced."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    os.close(fd)
    return Path(name)


def write_secret(path: Path, text: str) -> None:
    """Create *path* readable by its owner only, atomically."""
    os.replace(_write_temp(path, text), path)


def _create_secret(path: Path, text: str) -> bool:
    """Create *path* with *text* unless it exists (servers sharing the data
    dir may start at once: link(2) lets one win).  True if this did."""
    tmp = _write_temp(path, text)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


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
    try:
        with engine.begin() as conn:
            created = thd_bootstrap(conn)
            if created is None:
                return None
            username, token = created
            path = data_dir / TOKEN_FILE
            # Written inside the transaction: if the file cannot be written, no
            # admin is left behind whose token nobody knows.
            write_secret(path, token + "\n")
    except sa.exc.IntegrityError:
        # Another server on the same database created the admin meanwhile
        # (and wrote the token file, if the data dir is shared).
        return None
    return username, path


def power_key(data_dir: Path) -> bytes:
    """The server's key for BMC passwords, ``<data-dir>/power.key`` (mode
    0600), made once like machine.key (pxed.boot.key): servers sharing the
    data dir agree on it.  A lost or damaged key is replaced by a new one; passwords
    sealed with the old one no longer open, and power actions say so until
    they are set again (PUT /machine/{mac} with Power)."""
    return server_key(Path(data_dir) / POWER_KEY_FILE)


def server_key(path: Path) -> bytes:
    """The 32-byte key in *path* (mode 0600), made when missing or
    unreadable.  Servers sharing the data dir share it: one of them makes
    it, whichever starts first (link(2) lets one win)."""
    for _ in range(2):
        key = _read_key(path)
        if key is not None:
            return key
        if _create_secret(path, secrets.token_bytes(32).hex() + "\n"):
            break
    else:
        # Present but unusable (truncated, not hex): replaced.
        write_secret(path, secrets.token_bytes(32).hex() + "\n")
    key = _read_key(path)
    assert key is not None
    return key


def _read_key(path: Path) -> bytes | None:
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return key if len(key) >= 32 else None
