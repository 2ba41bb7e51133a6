"""First start's secrets: the machine-credential key is made once, however
many servers sharing the data dir start at once."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

from pxed.boot.key import MACHINE_KEY_FILE, machine_key


def test_servers_starting_at_once_share_one_machine_key(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: machine_key(tmp_path), range(32)))
    assert len(keys) == 1
    assert machine_key(tmp_path) in keys
    assert os.listdir(tmp_path) == [MACHINE_KEY_FILE]  # no temporary file left
    assert stat.S_IMODE(os.stat(tmp_path / MACHINE_KEY_FILE).st_mode) == 0o600


def test_an_unusable_machine_key_is_replaced(tmp_path):
    (tmp_path / MACHINE_KEY_FILE).write_text("not hex\n")
    key = machine_key(tmp_path)
    assert len(key) == 32
    assert machine_key(tmp_path) == key
