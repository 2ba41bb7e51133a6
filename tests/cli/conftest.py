"""The real pxectl (``python -m pxed.cli``, this worktree's code) run in a
subprocess against a real pxed: off the reactor thread, which serves it
(``deferToThread``), with a config dir of its own per test.

On SQLite only: pxectl drives the HTTP API, whose database side the API
tests cover on both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
