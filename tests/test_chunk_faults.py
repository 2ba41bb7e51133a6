"""The chunk store when pxed is killed (kill -9) while it indexes a version
and while it collects: no chunk under its name whose bytes differ from it,
no committed version whose chunks are missing, and the version intact and
indexed after the next start."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import zstandard

from pxed.agent import chunkindex
from tests.helpers import MIB, TWISTD, free_port, wait_for

pytestmark = pytest.mark.slow

SIZE = 160 * MIB


class Pxed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *TWISTD,
                "--pidfile=",
                "-n",
                "pxed",
                "--port",
                f"tcp:{self.port}:interface=127.0.0.1",
                "--data-dir",
                str(self.data),
            ],
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(f"{self.url}/healthz", self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=20)

    def call(self, method: str, path: str, body=None, headers=None, length=None):
        token = (self.data / "admin.token").read_text().strip()
        h = {"Authorization": f"Bearer {token}", **(headers or {})}
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if length is not None:
            h["Content-Length"] = str(length)
        req = urllib.request.Request(  # noqa: S310 (loopback)
            self.url + path, data=body, headers=h, method=method
        )
        with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310 (loopback)
            return r.read()


def busy_staging(data: Path) -> bool:
    staging = data / "chunks" / ".staging"
    return any(any(d.iterdir()) for d in staging.iterdir() if d.is_dir())


def check_store(data: Path) -> set[bytes]:
    """Every chunk under its name is complete and matches it; returns the
    digests stored."""
    stored = set()
    for path in (data / "chunks").glob("??/*"):
        raw = zstandard.ZstdDecompressor().decompress(path.read_bytes())
        assert hashlib.sha256(raw).hexdigest() == path.name, f"{path} is not what it is named"
        stored.add(bytes.fromhex(path.name))
    return stored


def check_indexes(data: Path) -> None:
    stored = check_store(data)
    for idx in (data / "images").glob("*/*.idx"):
        missing = set(chunkindex.read(idx).digests) - stored
        assert not missing, f"{idx} names {len(missing)} chunks the store lacks"


def test_kill_9_while_indexing_and_collecting_leaves_every_version_whole(tmp_path):
    source = tmp_path / "disk.img"
    # Random throughout: every chunk is new, so indexing writes for long.
    with open(source, "wb") as f:
        for _ in range(SIZE // MIB):
            f.write(os.urandom(MIB))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()

    px = Pxed(tmp_path)
    px.start()
    image = json.loads(px.call("POST", "/image", {"Name": "big", "Size": SIZE}))["UUID"]
    with open(source, "rb") as f:
        px.call(
            "POST",
            f"/image/{image}",
            f,
            {"Content-Type": "application/octet-stream"},
            length=SIZE,
        )
    deadline = time.monotonic() + 60
    while not busy_staging(px.data):
        assert time.monotonic() < deadline, "indexing never began"
        time.sleep(0.005)
    px.kill()
    # What the kill left: chunks in staging, perhaps some under their
    # names, but none of those wrong, and no index naming a missing one.
    check_indexes(px.data)
    assert (px.data / "images" / image / "1.img").stat().st_size == SIZE

    px.start()
    deadline = time.monotonic() + 120
    while True:
        got = json.loads(px.call("GET", f"/image/{image}"))
        v1 = next(v for v in got["Versions"] if v["Version"] == 1)
        if v1["Chunks"] is not None:
            break
        assert time.monotonic() < deadline, "the version was never indexed after the restart"
        time.sleep(0.2)
    assert v1["Chunks"]["UniqueBytes"] == SIZE
    assert not (px.data / "images" / image / "1.img").exists()
    assert not busy_staging(px.data)
    check_indexes(px.data)
    body = px.call("GET", f"/image/{image}/1")
    assert hashlib.sha256(body).hexdigest() == digest == v1["Sha256"]

    # Collection cut off: delete version 0 (a blank disk of zeros, chunks
    # of its own) and kill at once.  Whatever was removed, version 1 stays
    # whole, and the next collection finishes the work.
    zero = next(v for v in got["Versions"] if v["Version"] == 0)
    assert zero["Chunks"] is not None
    px.call("DELETE", f"/image/{image}/0")
    px.kill()
    check_indexes(px.data)
    px.start()
    body = px.call("GET", f"/image/{image}/1")
    assert hashlib.sha256(body).hexdigest() == digest
    px.kill()
