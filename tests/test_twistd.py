"""The installed daemon: `twistd -n pxed` is found and serves, on its
default SQLite file and on a PostgreSQL URL (``database_url``); bad settings
stop it with one line."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import TWISTD, free_port, wait_for

pytestmark = pytest.mark.slow


def pxed_command(port: int, data_dir: Path) -> list[str]:
    """twistd running pxed in the foreground on a loopback port."""
    return [
        *TWISTD,
        "--pidfile=",
        "-n",
        "pxed",
        "--port",
        f"tcp:{port}:interface=127.0.0.1",
        "--data-dir",
        str(data_dir),
    ]


def test_twistd_finds_the_plugin_and_serves(tmp_path: Path, database_url: str):
    # SQLite as by default, a file in the data dir; PostgreSQL by its URL.
    default = database_url.startswith("sqlite")
    port = free_port()
    proc = subprocess.Popen(
        pxed_command(port, tmp_path / "var") + ([] if default else ["--database", database_url]),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert b'"ok"' in wait_for(f"http://127.0.0.1:{port}/healthz", proc)
        assert (tmp_path / "var" / "pxed.sqlite").exists() == default
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "created database schema" in out
    assert "Traceback" not in out


def test_plain_twistd_lists_pxed():
    out = subprocess.run([*TWISTD, "--help"], capture_output=True, text=True).stdout
    assert "pxed" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--boot-policy", "sometimes"], "boot_policy"),
        (["--base-url", "example.com"], "base_url"),
        (["--config", "/nonexistent/pxed.toml"], "not found"),
        (["--data-dir", "/proc/pxed"], "data_dir"),
    ],
)
def test_bad_settings_stop_startup_with_one_line(tmp_path, args, message):
    proc = subprocess.run(
        [*TWISTD, "--pidfile=", "-n", "pxed", "--port", f"tcp:{free_port()}", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pxed: error: ")
    assert message in lines[0]


def test_stale_schema_refused_under_no_migrate_then_admin_upgrades(tmp_path, database_url):
    from pxed.db import migrate
    from pxed.db.pool import make_engine

    revisions = [
        r.revision
        for r in migrate.ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()
    ]
    if len(revisions) < 2:
        pytest.skip("only one schema revision so far")
    data = tmp_path / "var"
    data.mkdir()
    engine = make_engine(database_url)
    migrate.upgrade(engine, revisions[-1])
    engine.dispose()

    proc = subprocess.run(
        [
            *TWISTD,
            "--pidfile=",
            "-n",
            "pxed",
            "--no-migrate",
            "--data-dir",
            str(data),
            "--database",
            database_url,
            "--port",
            f"tcp:{free_port()}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "pxed-admin db upgrade" in proc.stderr
    admin = subprocess.run(
        ["pxed-admin", "--data-dir", str(data), "--database", database_url, "db", "upgrade"],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert admin.returncode == 0, admin.stderr
    assert f"-> {migrate.head()}" in admin.stdout


def test_a_port_in_use_stops_startup_naming_it(tmp_path):
    # The port is bound by twistd in privilegedStartService (before it would
    # drop privileges); one that is taken stops the daemon, and the error's
    # last line says which address could not be bound.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            pxed_command(port, tmp_path / "var"),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode != 0
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert f"Couldn't listen on 127.0.0.1:{port}" in out[-1]
    assert "Address already in use" in out[-1]
