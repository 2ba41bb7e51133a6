"""The real pxectl (``python -m pxed.cli``, this worktree's code) run in a
subprocess against a real pxed: off the reactor thread, which serves it
(``deferToThread``), with a config dir of its own per test.

On SQLite only: pxectl drives the HTTP API, whose database side the API
tests cover on both."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.internet.defer import Deferred

from tests.helpers import Client, Server

ROOT = Path(__file__).resolve().parents[2]


def token_of(client: Client) -> str:
    return client.headers["Authorization"].split()[1]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Pxectl:
    """Runs pxectl as a user would: URL and token in the environment unless
    *login* (then only what ``pxectl login`` stored)."""

    server: Server
    config_home: Path
    token: str | None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PXED_")}
        env.update(PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(self.config_home), COLUMNS="120")
        if self.token is not None:
            env.update(PXED_URL=self.server.url, PXED_TOKEN=self.token)
        env.update(extra)
        return env

    def run_blocking(self, *args: str, input: str | None = None, **env: str) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "pxed.cli", *args],
            capture_output=True,
            text=True,
            input=input,
            env=self.env(**env),
            timeout=60,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def __call__(self, *args: str, input: str | None = None, **env: str) -> Deferred[Result]:
        """Started at once (a Deferred, not a coroutine), so a test can
        play the other side while pxectl runs."""
        return threads.deferToThread(self.run_blocking, *args, input=input, **env)

    async def ok(self, *args: str, **env: str) -> Result:
        result = await self(*args, **env)
        assert result.code == 0, (args, result)
        return result

    def as_user(self, client: Client) -> Pxectl:
        return Pxectl(self.server, self.config_home, token_of(client))


@pytest_twisted.async_fixture
async def pxectl(server: Server, tmp_path: Path) -> Pxectl:
    """pxectl as the server's admin."""
    return Pxectl(server, tmp_path / "config", token_of(server.admin))


@pytest.fixture
def database() -> str:
    """SQLite alone (overrides tests/conftest.py's parametrised fixture)."""
    return "sqlite"


class OnPty:
    """pxectl with its stderr on a pseudo-terminal (stdout to a pipe), read
    as a person's terminal would show it."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.leader, follower = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pxed.cli", *args],
            stdout=subprocess.PIPE,
            stderr=follower,
            env=env,
            cwd=ROOT,
        )
        os.close(follower)
        self.raw = b""
        self.shown = ""

    def _read_until(self, needle: str | None, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while needle is None or needle not in self.shown:
            ready, _, _ = select.select([self.leader], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"{needle!r} not shown in {timeout} s: {self.shown!r}")
            try:
                chunk = os.read(self.leader, 65536)
            except OSError:  # EIO: the process closed the terminal
                chunk = b""
            if not chunk:
                assert needle is None, f"{needle!r} never shown: {self.shown!r}"
                break
            # The terminal's own CR before each LF taken out (over the whole
            # output: a chunk may end between the two).
            self.raw += chunk
            self.shown = self.raw.decode(errors="replace").replace("\r\n", "\n")
        return self.shown

    def expect(self, needle: str, timeout: float = 20) -> Deferred[str]:
        """Fires once the terminal has shown *needle*."""
        return threads.deferToThread(self._read_until, needle, timeout)

    def _finish(self) -> tuple[int, str, str]:
        self._read_until(None, 60)
        out = self.proc.stdout.read().decode()
        os.close(self.leader)
        return self.proc.wait(timeout=60), out, self.shown

    def finish(self) -> Deferred[tuple[int, str, str]]:
        """The exit code, stdout and all the terminal showed."""
        return threads.deferToThread(self._finish)


def screen_lines(shown: str) -> list[str]:
    """What stays on the terminal: each line as last redrawn (after its last CR)."""
    lines = shown.rstrip("\n").split("\n")  # not splitlines(): that splits on CR too
    return [line.rsplit("\r", 1)[-1].replace("\x1b[K", "") for line in lines]
