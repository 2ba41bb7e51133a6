"""The server's key for machine and enlistment credentials,
``<data-dir>/machine.key``: their tokens are derived from it and a nonce
kept in each credential's row (only the token's hash is stored), so the
database alone does not give a token away."""

from __future__ import annotations

from pathlib import Path

from pxed.bootstrap import server_key

MACHINE_KEY_FILE = "machine.key"


def machine_key(data_dir: Path) -> bytes:
    """The key, made when missing or unreadable.  Tokens derived from a
    lost key no longer match their hashes: the next boot answer mints new
    ones.  Servers sharing the data dir share the key (one of them makes
    it, whichever starts first), so each accepts and repeats the others'
    credentials."""
    return server_key(Path(data_dir) / MACHINE_KEY_FILE)
