"""Fixtures: a real pxed on an ephemeral loopback port, driven over HTTP,
with a fresh SQLite file per test.  What tests import (the client, MAC,
MIB, add_machine, new_image, machine_token, …) is in tests/helpers.py.

Markers (pyproject.toml; --strict-markers rejects any other):
  docker  needs a Docker engine (tests/docker_fixtures.py finds one, or
          starts dockerd as root);
  e2e     boots QEMU VMs from a pxed (tests/e2e; set automatically there);
  slow    starts subprocesses such as twistd or pip.

The inner loop, under a minute on two cores:
    python -m pytest -m "not e2e and not docker"
then, before pushing, the rest (several minutes; they start dockerd and QEMU):
    python -m pytest -m "docker or e2e"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from pxed import config as pxed_config
from pxed import service

# IN_CI, Response and eventually: for modules that still import them from
# here; new code imports from tests.helpers.
from tests.helpers import IN_CI, Client, Response, Server, eventually  # noqa: F401

pytest_plugins = ["tests.docker_fixtures"]


@pytest_twisted.async_yield_fixture
async def start_server(tmp_path: Path):
    """A factory: ``await start_server(boot_policy="always", …)`` starts pxed
    with those settings (and *config_text*, TOML, beneath them) in a fresh
    data dir; all are stopped afterwards."""
    running: list[service.Pxed] = []

    async def start(config_text: str | None = None, **settings: Any) -> Server:
        data_dir = tmp_path / f"data{len(running)}"
        settings.setdefault("data_dir", str(data_dir))
        settings.setdefault("port", "tcp:0:interface=127.0.0.1")
        config_file = None
        if config_text is not None:
            config_file = tmp_path / f"pxed{len(running)}.toml"
            config_file.write_text(config_text)
        cfg = pxed_config.load(config_file, settings)
        px = service.build(cfg, reactor)
        px.service.startService()
        # Stopped at teardown even if what follows fails: a pool thread
        # left running would keep the test process from exiting.
        running.append(px)
        port = await px.web.endpoint.listening
        url = f"http://127.0.0.1:{port.getHost().port}"
        token = (Path(cfg.data_dir) / "admin.token").read_text().strip()
        anonymous = Client(url)
        return Server(px, cfg, url, anonymous, anonymous.bearer(token))

    yield start
    for px in reversed(running):
        if px.service.running:
            await px.service.stopService()


@pytest_twisted.async_yield_fixture
async def server(start_server):
    yield await start_server()


@pytest.fixture
def client(server: Server) -> Client:
    return server.client
