"""A throw-away PostgreSQL for the tests: one cluster per run, initdb'd in a
temporary directory and listening only on a unix socket there, and a fresh
database per test.  A pytest plugin, loaded by ``pytest_plugins`` in
tests/conftest.py.

``database_url`` is parametrised over ``sqlite`` and ``postgresql``: a test
that takes it runs once on each (``test_x[sqlite]``, ``test_x[postgresql]``).
``postgres_url`` is a fresh, empty PostgreSQL database alone.
``start_server`` (tests/conftest.py) gives each server on PostgreSQL a
database from ``postgres_databases``: a copy of ``postgres_template`` (the
migrated schema), emptied and handed out again once its test is over.

The server runs as an unprivileged user: PostgreSQL refuses to run as root,
so under root (CI) initdb and pg_ctl run as ``postgres`` (the Debian package
creates it; ``nobody`` otherwise) through runuser.  Authentication is
``trust`` on the socket, which only that directory's permissions reach.
Durability is off (fsync, synchronous_commit): the cluster is gone after
the run anyway."""

from __future__ import annotations

import functools
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from pxed.db import migrate
from pxed.db.pool import make_engine
from tests.helpers import missing

INSTALL = "apt-get install postgresql"
SUPERUSER = "postgres"


def _bindir() -> Path | None:
    """Where initdb and pg_ctl are: Debian keeps them out of PATH, in
    /usr/lib/postgresql/<major>/bin (the newest major if several)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def _server_user() -> str | None:
    """The user the server runs as when we are root, None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    missing(f"no unprivileged user to run PostgreSQL as: {INSTALL}")
    return None


@dataclass
class Cluster:
    root: Path  # data/, the socket and the log
    bindir: Path
    user: str | None
    _names = itertools.count(1)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.root}"

    def command(self, tool: str, *args: str) -> list[str]:
        argv = [str(self.bindir / tool), *args]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return argv

    def run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            self.command(tool, *args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}"
            )

    def start(self) -> None:
        self.run(
            "initdb",
            "--pgdata",
            str(self.data),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "''",  # no TCP: the socket only
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self.run("pg_ctl", "start", "--wait", "--pgdata", str(self.data), "--log", str(self.log))

    def stop(self) -> None:
        self.run("pg_ctl", "stop", "--wait", "--pgdata", str(self.data), "--mode", "immediate")

    def create_database(self, template: str | None = None) -> str:
        """A new database (a copy of *template*, if given): its name."""
        name = f"pxed_test_{next(self._names)}"
        copy = f' TEMPLATE "{template}"' if template else ""
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{copy}')
        return name

    def drop_database(self, name: str) -> None:
        """Drop *name*, with any connection still open to it."""
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')

    @functools.cached_property
    def admin(self) -> sa.Engine:
        """An engine on the maintenance database, autocommit: CREATE and
        DROP DATABASE cannot run inside a transaction."""
        return sa.create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)


@pytest.fixture(scope="session")
def postgres_cluster():
    """The run's PostgreSQL cluster, started on first use, stopped at the end."""
    bindir = _bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        missing(f"initdb not found: {INSTALL}")
    user = _server_user()
    # Short (a socket path has at most 107 bytes) and reachable by the
    # server's user, which pytest's own 0700 tmp dirs are not.
    root = Path(tempfile.mkdtemp(prefix="pxed-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    root.chmod(0o700)
    cluster = Cluster(root, bindir, user)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.admin.dispose()
        try:
            if (cluster.data / "postmaster.pid").exists():
                cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_template(postgres_cluster: Cluster) -> str:
    """A database brought to the current schema by pxed's migrations, once
    per run, for servers to start from a copy of (as ``migrated_database``
    is for SQLite).  Nothing stays connected to it: a template with
    connections cannot be copied."""
    name = postgres_cluster.create_database()
    engine = make_engine(postgres_cluster.url(name))
    try:
        migrate.prepare(engine)
    finally:
        engine.dispose()
    return name


# A database's rows as ``Databases.dump`` reads them: each table's COPY text,
# and each sequence's last value (None if never used).
Rows = tuple[dict[str, bytes], dict[str, int | None]]


@dataclass
class Databases:
    """Databases at the current schema, for the tests' servers.  CREATE
    DATABASE from the template costs a quarter to half a second here, times
    some 250 server tests; emptying a database whose servers have stopped
    (DELETE from every table, sequences restarted) some 15 ms.  So a
    database given back is emptied and handed out again."""

    cluster: Cluster
    template: str
    free: list[str] = field(default_factory=list)

    def take(self) -> str:
        """The name of a database at the current schema, with no rows."""
        return self.free.pop() if self.free else self.cluster.create_database(self.template)

    def give_back(self, name: str) -> None:
        try:
            emptied = self._empty(name)
        except sa.exc.DBAPIError:
            emptied = False  # something held on to it
        if emptied:
            self.free.append(name)
        else:
            self.cluster.drop_database(name)

    @functools.cached_property
    def _tables(self) -> list[str]:
        with self._engine(self.template).connect() as conn:
            return list(conn.exec_driver_sql(_TABLES).scalars())

    @functools.cached_property
    def _head(self) -> str:
        with self._engine(self.template).connect() as conn:
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()

    def _engine(self, name: str) -> sa.Engine:
        return sa.create_engine(self.cluster.url(name), poolclass=sa.NullPool)

    def _empty(self, name: str) -> bool:
        """Every row of *name* deleted, unless its schema is not the
        template's (then False)."""
        engine = self._engine(name)
        try:
            with engine.begin() as conn:
                # A connection a test left open would keep its locks.
                conn.exec_driver_sql(_OTHERS_TERMINATED)
                conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
                head = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
                if head != self._head:
                    return False
                # Without foreign-key triggers, so the order does not matter.
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
                for table in self._tables:
                    conn.exec_driver_sql(f'DELETE FROM "{table}"')  # noqa: S608 (pg_tables)
                conn.exec_driver_sql(_SEQUENCES_RESTARTED)
        finally:
            engine.dispose()
        return True

    def dump(self, name: str) -> Rows:
        """Every row of database *name*, for ``load`` into another."""
        engine = self._engine(name)
        try:
            with engine.connect() as conn:
                cur = conn.connection.dbapi_connection.cursor()
                tables = {}
                for table in self._tables:
                    with cur.copy(f'COPY "{table}" TO STDOUT') as copy:
                        tables[table] = b"".join(bytes(chunk) for chunk in copy)
                sequences = {s: v for s, v in conn.exec_driver_sql(_SEQUENCE_VALUES)}
        finally:
            engine.dispose()
        return tables, sequences

    def load(self, name: str, rows: Rows) -> None:
        """*rows* (from ``dump``) into database *name*, which has none."""
        tables, sequences = rows
        engine = self._engine(name)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
                cur = conn.connection.dbapi_connection.cursor()
                for table, data in tables.items():
                    with cur.copy(f'COPY "{table}" FROM STDIN') as copy:
                        copy.write(data)
                for sequence, value in sequences.items():
                    if value is not None:
                        conn.execute(sa.text("SELECT setval(:s, :v)"), {"s": sequence, "v": value})
        finally:
            engine.dispose()


_TABLES = (
    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    " AND tablename <> 'alembic_version' ORDER BY tablename"
)
_OTHERS_TERMINATED = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)
_SEQUENCES_RESTARTED = (
    "SELECT setval(s.seqrelid, s.seqstart, false) FROM pg_sequence s"
    " JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = 'public'"
)
_SEQUENCE_VALUES = (
    "SELECT quote_ident(sequencename), last_value FROM pg_sequences WHERE schemaname = 'public'"
)


@pytest.fixture(scope="session")
def postgres_databases(postgres_cluster: Cluster, postgres_template: str) -> Databases:
    """Where ``start_server`` takes its servers' databases from (and gives
    them back to)."""
    return Databases(postgres_cluster, postgres_template)


@pytest.fixture
def postgres_url(postgres_cluster: Cluster):
    """The URL of a new, empty database, dropped after the test (with any
    connection the test left open)."""
    name = postgres_cluster.create_database()
    yield postgres_cluster.url(name)
    postgres_cluster.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    """An empty database: an SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pxed.sqlite'}"
    return request.getfixturevalue("postgres_url")
