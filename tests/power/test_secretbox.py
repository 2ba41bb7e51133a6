"""BMC passwords sealed for the database (pxed/power/secretbox.py) under
the server's power.key (pxed/bootstrap.py)."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from pxed.bootstrap import power_key
from pxed.power.secretbox import SealError, SecretBox


def test_sealed_passwords_open_with_their_key_only(tmp_path):
    box = SecretBox(power_key(tmp_path))
    sealed = box.seal("calvin")
    assert "calvin" not in sealed and sealed != box.seal("calvin")
    assert box.open(sealed) == "calvin"
    assert box.seal("") == "" and box.open("") == ""
    other = SecretBox(os.urandom(32))
    with pytest.raises(SealError, match="set the password again"):
        other.open(sealed)
    with pytest.raises(SealError):
        box.open(sealed[:-4] + "AAAA")


def test_the_key_is_made_once_and_shared(tmp_path):
    """Servers starting at once on one data dir agree on the key."""
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(power_key(tmp_path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    path = tmp_path / "power.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert power_key(tmp_path) == keys[0]
    assert (tmp_path / "machine.key").exists() is False
