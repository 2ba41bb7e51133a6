"""pxed-admin against a real database: a running server's (SQLite in its data
dir, or PostgreSQL, named by --database), or an empty one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted

pytestmark = pytest.mark.slow  # runs the pxed-admin script

ADMIN = [str(Path(sys.executable).with_name("pxed-admin"))]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ADMIN, *args], capture_output=True, text=True, timeout=60)


@pytest_twisted.ensureDeferred
async def test_create_user_prints_a_working_token(server):
    where = ("--data-dir", str(server.config.data_dir), "--database", server.config.database_url)
    r = run(
        *where,
        "create-user",
        "carol",
        "--email",
        "c@x.org",
        "--role",
        "moderator",
        "--token",
    )
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("pxu_") and "\n" not in token
    me = await server.anonymous.bearer(token).get("/user/me")
    assert me.json()["Username"] == "carol" and me.json()["Role"] == "moderator"

    again = run(*where, "create-user", "carol")
    assert again.returncode == 1
    assert "already exists" in again.stderr and "Traceback" not in again.stderr
    r = run(*where, "create-token", "carol")
    assert (await server.anonymous.bearer(r.stdout.strip()).get("/user/me")).code == 200


def test_refuses_an_empty_database(tmp_path, database_url):
    r = run("--data-dir", str(tmp_path), "--database", database_url, "create-user", "dave")
    assert r.returncode != 0
    assert "pxed-admin db upgrade" in r.stderr
