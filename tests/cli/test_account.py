"""pxectl login, whoami, users, tokens, and what errors look like."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest_twisted

from tests.cli.conftest import ROOT
from tests.helpers import free_port, require_tool


@pytest_twisted.ensureDeferred
async def test_login_stores_url_and_token_0600_and_whoami_uses_them(server, pxectl):
    token = pxectl.token
    anonymous = pxectl.as_user(server.admin)
    anonymous.token = None
    # Asked for the token, hidden, on stdin.
    r = await anonymous("login", server.url, input=token + "\n")
    assert r.code == 0, r
    assert "as admin (admin)" in r.out
    path = pxectl.config_home / "pxed" / "cli.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f'url = "{server.url}"' in path.read_text()
    me = (await anonymous.ok("whoami", "--json")).json()
    assert (me["Username"], me["Role"]) == ("admin", "admin")
    assert "Role:" in (await anonymous.ok("whoami")).out
    # The environment overrides the file.
    alice = await server.user("alice")
    r = await anonymous.ok("whoami", "--json", PXED_TOKEN=alice.headers["Authorization"][7:])
    assert r.json()["Username"] == "alice"


@pytest_twisted.ensureDeferred
async def test_errors_are_one_line_with_meaningful_exit_codes(server, pxectl):
    nobody = pxectl.as_user(server.admin)
    nobody.token = None
    r = await nobody("whoami")
    assert (r.code, r.err.strip()) == (
        3,
        "Error: not logged in: run `pxectl login URL` (or set PXED_URL and PXED_TOKEN)",
    )
    r = await nobody("login", server.url, "--token", "pxu_wrong")
    assert r.code == 3 and "refused the token: 401" in r.err
    assert not (pxectl.config_home / "pxed" / "cli.toml").exists()
    r = await pxectl("machines", "show", "52:54:00:00:00:99")
    assert r.code == 4 and r.err.startswith("Error: 404 Not Found: ") and r.err.count("\n") == 1
    r = await pxectl("machines", "frobnicate")
    assert r.code == 2
    r = await pxectl("whoami", PXED_URL=f"http://127.0.0.1:{free_port()}")
    assert r.code == 5 and r.err.startswith("Error: cannot reach http://127.0.0.1:")
    alice = pxectl.as_user(await server.user("alice"))
    r = await alice("users", "list")
    assert r.code == 3 and "403" in r.err
    r = await pxectl("images", "create", "x", "--compression", "gzip")
    assert r.code == 2


@pytest_twisted.ensureDeferred
async def test_users_and_tokens(server, pxectl):
    await server.user("alice")
    users = (await pxectl.ok("users", "list", "--json")).json()
    assert sorted(u["Username"] for u in users) == ["admin", "alice"]
    assert "alice@example.org" in (await pxectl.ok("users", "list")).out

    created = (await pxectl.ok("tokens", "create", "--name", "ci", "--days", "3", "--json")).json()
    assert created["Token"].startswith("pxu_") and created["ExpiresAt"]
    secret = (await pxectl.ok("tokens", "create", "--user", "alice")).out.strip()
    assert secret.startswith("pxu_")
    assert (await pxectl.ok("whoami", "--json", PXED_TOKEN=secret)).json()["Username"] == "alice"

    listed = (await pxectl.ok("tokens", "list", "--json")).json()
    assert created["ID"] in [t["ID"] for t in listed]
    assert all("Token" not in t for t in listed)
    assert "ci" in (await pxectl.ok("tokens", "list")).out
    await pxectl.ok("tokens", "revoke", str(created["ID"]))
    r = await pxectl("whoami", PXED_TOKEN=created["Token"])
    assert r.code == 3
    left = (await pxectl.ok("tokens", "list", "--json")).json()
    assert created["ID"] not in [t["ID"] for t in left]


@pytest_twisted.ensureDeferred
async def test_users_create_show_edit_delete(server, pxectl):
    r = await pxectl.ok("users", "create", "bob", "--email", "bob@example.org", "--json")
    assert (r.json()["Username"], r.json()["Role"]) == ("bob", "user")
    assert (
        "Created carol"
        in (
            await pxectl.ok(
                "users", "create", "carol", "--email", "c@example.org", "--role", "moderator"
            )
        ).out
    )
    shown = (await pxectl.ok("users", "show", "carol", "--json")).json()
    assert (shown["Email"], shown["Role"]) == ("c@example.org", "moderator")
    assert "Email:" in (await pxectl.ok("users", "show", "bob")).out
    r = await pxectl.ok("users", "edit", "bob", "--name", "Bob B", "--role", "moderator", "--json")
    assert (r.json()["Name"], r.json()["Role"]) == ("Bob B", "moderator")
    assert (await pxectl("users", "edit", "bob")).code == 2
    assert "Deleted bob" in (await pxectl.ok("users", "delete", "bob")).out
    assert (await pxectl("users", "show", "bob")).code == 4
    r = await pxectl("users", "create", "x", "--email", "not-an-address")
    assert r.code == 1 and r.err == "Error: 400 Bad Request: Email: not an e-mail address\n"


def test_shell_completion(tmp_path):
    """click's completion, as ``eval "$(_PXECTL_COMPLETE=bash_source pxectl)"`` uses it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_PXECTL_COMPLETE": "bash_source"}
    script = subprocess.run(
        [sys.executable, "-m", "pxed.cli"], env=env, capture_output=True, text=True, timeout=30
    ).stdout
    assert "_pxectl_completion()" in script and "complete -o nosort -F _pxectl_completion" in script
    env.update(_PXECTL_COMPLETE="bash_complete", COMP_WORDS="pxectl machines p", COMP_CWORD="2")
    done = subprocess.run(
        [sys.executable, "-m", "pxed.cli"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.stdout.split() == ["plain,power"]


@pytest_twisted.ensureDeferred
async def test_ssh_keys(server, pxectl, tmp_path):
    keygen = require_tool("ssh-keygen", "openssh-client")
    pub = tmp_path / "id_ed25519.pub"
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "me@lab", "-f", pub.with_suffix("")],
        check=True,
    )
    printed = subprocess.run(
        [keygen, "-l", "-f", pub], check=True, capture_output=True, text=True
    ).stdout
    r = await pxectl.ok("keys", "add", str(pub))
    # The fingerprint ssh-keygen prints for the same file.
    assert r.out.startswith("Added key ") and r.out.split()[3] == printed.split()[1]
    listed = (await pxectl.ok("keys", "list", "--json")).json()
    assert [k["Key"] for k in listed] == [pub.read_text().strip()]
    assert "me@lab" in (await pxectl.ok("keys", "list")).out
    r = await pxectl("keys", "add", "-", input="ssh-ed25519 nonsense\n")
    assert r.code == 1 and "400" in r.err and "not a valid ssh-ed25519" in r.err
    r = await pxectl("keys", "add", "--user", "admin", "-", input=pub.read_text())
    assert r.code == 1 and "409" in r.err and "already has the key" in r.err
    await pxectl.ok("keys", "delete", str(listed[0]["ID"]))
    assert (await pxectl.ok("keys", "list", "--json")).json() == []
