"""A first run as the README tells it: ``twistd -n pxed`` on an empty data
dir builds the management OS in the background (as root on Debian; the
kernel package comes from the cache the ``mgmtos`` fixture shares, so CI
downloads it once), saying so in its log, and then ``pxectl login`` and
``pxectl demo`` deploy a QEMU VM from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pxed.config import MGMTOS_BUILD_ENV
from tests.helpers import TWISTD, free_port, missing, wait_for

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 900.0


@dataclass
class FirstRun:
    url: str
    cwd: Path
    log: Path
    proc: subprocess.Popen

    def healthz(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as r:  # noqa: S310
            return json.loads(r.read())


def _env(**extra: str) -> dict[str, str]:
    """This worktree's code; the build not turned off (tests/conftest.py
    turns it off for every other pxed)."""
    dropped = (MGMTOS_BUILD_ENV, "PXED_URL", "PXED_TOKEN")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    return {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, qemu) -> Iterator[FirstRun]:
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists():
        missing("the first-start build needs root on Debian")
    cwd = tmp_path_factory.mktemp("firstrun")
    port = free_port()
    log = cwd / "twistd.log"
    with log.open("w") as out:
        # The README's run command, on a loopback port of its own.
        proc = subprocess.Popen(
            [*TWISTD, "-n", "pxed", "--port", f"tcp:{port}:interface=127.0.0.1"],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/healthz", proc, timeout=60)
        yield FirstRun(url, cwd, log, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "Traceback" not in log.read_text(), log.read_text()


def test_first_start_builds_the_management_os(first_run: FirstRun):
    started = time.monotonic()
    while (state := first_run.healthz()["mgmtos"]["x86_64"]) == "building":
        assert time.monotonic() - started < BUILD_TIMEOUT, first_run.log.read_text()
        time.sleep(1)
    text = first_run.log.read_text()
    assert state == "ready", text
    out = first_run.cwd / "var" / "static" / "mgmtos" / "x86_64"
    assert "management OS x86_64 missing: building it into " + str(out) in text
    assert "machines are told to boot from disk until it is ready" in text
    assert "management OS x86_64: kernel package: linux-image-" in text  # build.sh's progress
    assert "management OS x86_64 ready: built in" in text
    assert (out / "vmlinuz").stat().st_size > 1 << 20
    assert (out / "initramfs").stat().st_size > 1 << 20
    print(f"\nfirst-start build: {time.monotonic() - started:.1f} s after the API answered")


def test_pxectl_demo_deploys_its_vm(first_run: FirstRun, tmp_path: Path):
    env = _env(XDG_CONFIG_HOME=str(tmp_path / "config"))
    token = (first_run.cwd / "var" / "admin.token").read_text().strip()
    pxectl = [sys.executable, "-m", "pxed.cli"]
    # As the README does it: the token for login alone, from the environment.
    login = subprocess.run(
        [*pxectl, "login", first_run.url],
        capture_output=True,
        text=True,
        env={**env, "PXED_TOKEN": token},
        timeout=60,
    )
    assert login.returncode == 0, login
    started = time.monotonic()
    # Waits for the management OS itself if the build above is still going.
    demo = subprocess.run(
        [*pxectl, "demo", "--timeout", "600"], capture_output=True, text=True, env=env, timeout=700
    )
    took = time.monotonic() - started
    assert demo.returncode == 0, (demo.stdout, demo.stderr)
    out = demo.stdout
    for step in (
        "[1/7] management OS: ready",
        "[2/7] machine demo-vm (02:70:78:65:64:01): registered",
        "[4/7] setup pxed-demo",
        "event  work.netboot",
        "mgmtos info: deploying pxed-demo",
        "written 100%",
        "event  queue.done",
        "[6/7] VM: stopped",
        "[7/7] disk check: the VM's disk holds the image byte for byte",
        "Removed what the demo made",
    ):
        assert step in out, out
    print(f"\npxectl demo: {took:.1f} s\n{out}")
