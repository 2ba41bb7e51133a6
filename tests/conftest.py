"""Fixtures: a real pxed on an ephemeral loopback port, driven over HTTP,
with a fresh data dir per test (``server``, ``client``, ``start_server``).
What tests import -- the HTTP client, MAC, MIB, add_machine, new_image,
upload, enqueue, machine_token, machine_client, require_tool, WriteLock,
only_on -- is in tests/helpers.py; the Docker fixtures are the plugin
tests/docker_fixtures.py, a throw-away PostgreSQL the plugin
tests/postgres_fixtures.py, both loaded below.

Databases: every test that starts a server runs on SQLite and on
PostgreSQL, ``test_x[sqlite]`` and ``test_x[postgresql]`` (the ``database``
fixture, parametrised; a new test gets both without asking).  SQLite is a
file in the data dir, copied from a migrated one; PostgreSQL a database of
the cluster the tests start, at the migrated schema, emptied and reused
after the test (tests/postgres_fixtures.py).  Tests of the database layer
itself take ``database_url`` (an empty database, on each in turn).  A test
that is about one database says so with ``only_on("sqlite", reason)``.
On SQLite only: the ``docker`` tests (Docker builds, see
docker_fixtures.py) and the ``e2e`` ones (QEMU VMs, tests/e2e/conftest.py);
their database work is what the API tests cover on both.  Without
PostgreSQL installed the ``[postgresql]`` tests are skipped (fail with
CI=true); ``-k sqlite`` or ``-k postgresql`` picks one side.

Markers (registered in pyproject.toml; --strict-markers rejects others):
  docker  needs a Docker engine: set on every test that uses the
          docker_host or base_image fixture (tests/docker_fixtures.py);
  e2e     boots QEMU VMs from a pxed: set on everything under tests/e2e;
  slow    starts subprocesses such as twistd, pxed-admin or ruff, or
          fuzzes every route (tests/web/test_fuzz.py).

Parallel: pyproject.toml's addopts run the suite on one pytest-xdist
worker per core (``-n0`` runs it in this process, for a debugger).  What
shares a worker is ``xdist_group``, set by ``pytest_collection_modifyitems``
below: a test module's tests stay together (its module fixtures start
once), tests/bootnet's dnsmasq tests share one worker (they bind port 67
beside the host's veths), and everything that boots QEMU (tests/e2e,
tests/realnet) is one group, put first: it is a third of the run's time,
mostly one TCG core busy while the other worker runs the rest.

The inner loop, about two and a half minutes on two cores (both databases):
    python -m pytest -m "not e2e and not docker and not slow"
with the subprocesses and the fuzzer (about four):
    python -m pytest -m "not e2e and not docker"
before pushing, the rest (several minutes: they start dockerd and QEMU):
    python -m pytest -m "docker or e2e"
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher

from pxed import config as pxed_config
from pxed import service
from pxed.db import migrate
from pxed.db.pool import make_engine
from tests.helpers import Client, Server, sqlite_file

pytest_plugins = ["tests.docker_fixtures", "tests.postgres_fixtures", "tests.vmfixtures"]

# No pxed a test starts (in this process or a twistd subprocess) builds the
# management OS at start; tests/e2e/test_firstrun.py turns it on for its own.
os.environ[pxed_config.MGMTOS_BUILD_ENV] = "off"


TESTS = Path(__file__).parent
# Directories whose tests share one worker (see the docstring above); the
# first holds what boots QEMU.
SHARED_WORKER = {
    "qemu": (TESTS / "e2e", TESTS / "realnet"),
    "bootnet": (TESTS / "bootnet",),
}


def xdist_group_of(path: Path) -> str:
    for group, dirs in SHARED_WORKER.items():
        if any(d in path.parents for d in dirs):
            return group
    return str(path.relative_to(TESTS)) if TESTS in path.parents else str(path)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (with -n)
def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group_of(item.path)))
    # A stable sort: each group keeps its own order (tests/e2e/conftest.py
    # puts the Debian image's tests at the end of it).
    items.sort(key=lambda item: xdist_group_of(item.path) != "qemu")


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory) -> Path:
    """An empty SQLite database brought to the current schema by pxed's own
    migrations, once per run: a server starting in a fresh data dir begins
    from a copy and finds its schema current, instead of running every
    migration again (a tenth of a second, times some 250 server starts).
    Starting from nothing is covered by tests/db/test_migrations.py and the
    twistd tests."""
    path = tmp_path_factory.mktemp("schema") / "pxed.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    try:
        migrate.prepare(engine)
    finally:
        engine.dispose()  # the last connection closing folds the WAL in
    return path


RAM_DISK = Path("/dev/shm")
# What the ``database`` fixture runs a server test on, in this order.
DATABASES = ["sqlite", "postgresql"]


@pytest.fixture
def data_root(tmp_path: Path):
    """Where ``start_server`` puts data dirs: a fresh directory on the RAM
    filesystem where there is one, removed after the test.  pxed fsyncs
    every SQLite commit and image file; on this shared VM's disk each fsync
    costs about 10 ms, which made the waiting most of the suite's time and
    what it checks none the stronger.  (A test that passes its own
    ``data_dir`` gets what it asks for.)"""
    if not (RAM_DISK.is_dir() and os.access(RAM_DISK, os.W_OK)):
        yield tmp_path
        return
    root = Path(tempfile.mkdtemp(prefix="pxed-test-", dir=RAM_DISK))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=DATABASES)
def database(request) -> str:
    """The database ``start_server`` gives a server, each in turn:
    ``sqlite`` (a file in its data dir), then ``postgresql`` (a database
    at the migrated schema, tests/postgres_fixtures.py).  A test about one
    of them narrows this with ``only_on`` (tests/helpers.py), saying why."""
    return request.param


@pytest_twisted.async_yield_fixture
async def start_server(
    request, tmp_path: Path, data_root: Path, migrated_database: Path, database: str
):
    """A factory: ``await start_server(boot_policy="always", …)`` starts pxed
    with those settings (and *config_text*, TOML, beneath them) in a fresh
    data dir; all are stopped afterwards.  On PostgreSQL (the ``database``
    fixture) each data dir gets a database of its own at the current schema
    (with *rows*, from ``database_rows``, in it), given back afterwards: a
    server started again in the same data dir finds its database as SQLite
    would find its file.  ``database=`` among the settings wins."""
    running: list[service.Pxed] = []
    databases: dict[str, str] = {}  # data dir -> the database taken for it
    if database == "postgresql":
        pool = request.getfixturevalue("postgres_databases")

    async def start(config_text: str | None = None, *, rows: Any = None, **settings: Any) -> Server:
        data_dir = data_root / f"data{len(running)}"
        settings.setdefault("data_dir", str(data_dir))
        if database == "postgresql" and "database" not in settings:
            key = str(Path(settings["data_dir"]).resolve())
            if key not in databases:
                databases[key] = pool.take()
                if rows is not None:
                    pool.load(databases[key], rows)
            settings["database"] = pool.cluster.url(databases[key])
        settings.setdefault("port", "tcp:0:interface=127.0.0.1")
        # Repeated boot answers reach the event log within a fifth of a
        # second, not pxed's five.
        settings.setdefault("boot_answer_log_interval", 0.2)
        # Background indexing changes versions (Chunks) and files under
        # images/ while a test compares them; tests/test_chunks.py turns
        # it on.
        settings.setdefault("chunk_store", False)
        config_file = None
        if config_text is not None:
            config_file = tmp_path / f"pxed{len(running)}.toml"
            config_file.write_text(config_text)
        cfg = pxed_config.load(config_file, settings)
        db_file = sqlite_file(cfg)
        if db_file is not None and not db_file.exists():
            db_file.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(migrated_database, db_file)
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
    for name in databases.values():
        pool.give_back(name)


def database_rows(request, server: Server) -> Any:
    """What ``start_server(rows=…)`` puts into a new server's database: on
    PostgreSQL every row of stopped *server*'s, None on SQLite (whose rows
    are in the data dir, copied with it)."""
    url = sa.engine.make_url(server.config.database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return request.getfixturevalue("postgres_databases").dump(url.database)


@pytest_twisted.async_yield_fixture
async def server(start_server):
    yield await start_server()


@pytest.fixture
def client(server: Server) -> Client:
    return server.client


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """Everything logged while the test runs, as text: each event
    formatted, its repr (fields a format leaves out), and the traceback of
    any failure (tests look for secrets and tracebacks in it)."""
    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event) or "")
        lines.append(repr(event))
        failure = event.get("log_failure")
        if failure is not None:
            lines.append(failure.getTraceback())

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)
