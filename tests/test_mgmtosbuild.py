"""The management OS at start (pxed/mgmtosbuild.py): a missing one is
reported with the command that builds it, /healthz says each
architecture's state, and while a build runs its machines are told to boot
from disk.  The real build is tests/e2e/test_firstrun.py; here a stand-in
script plays build.sh, so the test holds the build open as long as it likes."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest_twisted

from pxed import mgmtosbuild
from pxed.config import MGMTOS_BUILD_ENV
from tests.helpers import MAC, add_machine, enqueue, eventually, missing, new_image, only_on

pytestmark = only_on("sqlite", "about the management OS's files, not the database")

FAKE_BUILD = """#!/bin/bash
echo "build.sh: pretending to build into $1 (cache $PXED_MGMTOS_CACHE)" >&2
while [ ! -e "$FAKE_BUILD_GO" ]; do sleep 0.05; done
mkdir -p "$1" && echo kernel >"$1/vmlinuz" && echo initrd >"$1/initramfs"
echo "build.sh: built in 0.1 s" >&2
echo "the closing how-to on stdout, not logged"
"""


async def healthz(server) -> dict:
    r = await server.anonymous.get("/healthz")
    assert r.code == 200, r.text
    return r.json()


@pytest_twisted.ensureDeferred
async def test_missing_management_os_is_reported_with_the_command(start_server, logged):
    server = await start_server()  # the test suite's pxed: mgmtos_build off
    assert (await healthz(server))["mgmtos"] == {"x86_64": "missing", "arm64": "missing"}
    out = (server.config.static_path / "mgmtos" / "x86_64").absolute()
    text = "\n".join(logged)
    assert "management OS x86_64 missing (mgmtos/x86_64/vmlinuz, mgmtos/x86_64/initramfs" in text
    command = f"bash {mgmtosbuild.SCRIPT} {out}"
    assert f"(mgmtos_build is off): run as root on Debian (x86_64): {command}" in text
    assert "arm64 machines cannot netboot until its vmlinuz and initramfs are there" in text
    # Built by hand while pxed runs: /healthz sees it.
    out.mkdir(parents=True)
    (out / "vmlinuz").write_bytes(b"k")
    (out / "initramfs").write_bytes(b"i")
    assert (await healthz(server))["mgmtos"]["x86_64"] == "ready"


@pytest_twisted.ensureDeferred
async def test_machines_boot_from_disk_while_it_builds(
    start_server, logged, tmp_path: Path, monkeypatch
):
    debian = Path("/etc/debian_version").exists()
    if os.geteuid() != 0 or platform.machine() != "x86_64" or not debian:
        missing("pxed builds the management OS only as root on a Debian x86_64 host")
    script, go = tmp_path / "build.sh", tmp_path / "go"
    script.write_text(FAKE_BUILD)
    monkeypatch.setattr(mgmtosbuild, "SCRIPT", script)
    monkeypatch.setenv("FAKE_BUILD_GO", str(go))
    monkeypatch.delenv(MGMTOS_BUILD_ENV)
    server = await start_server(mgmtos_build="auto", mgmtos_cache=str(tmp_path / "cache"))
    await add_machine(server)
    image = await new_image(server.admin)
    await enqueue(server.admin, [{"UUID": image, "Version": 0}], user="admin")

    # The API answers at once; the machine with work is sent to its disk.
    assert (await healthz(server))["mgmtos"]["x86_64"] == "building"
    answer = (await server.anonymous.get(f"/ipxe/{MAC}")).text
    assert "the management OS for x86_64 is being built" in answer and "exit" in answer

    async def told_why() -> bool:
        events = (await server.admin.get(f"/machine/{MAC}/events")).json()
        reason = "local disk: the management OS for x86_64 is being built"
        return any(e["Action"] == "boot.answer" and reason in e["Detail"] for e in events)

    await eventually(told_why)  # the machine's events say why

    go.touch()

    async def ready() -> bool:
        return (await healthz(server))["mgmtos"]["x86_64"] == "ready"

    await eventually(ready)
    answer = (await server.anonymous.get(f"/ipxe/{MAC}")).text
    assert "/static/mgmtos/x86_64/vmlinuz" in answer and "pxed.token=" in answer
    text = "\n".join(logged)
    out = (server.config.static_path / "mgmtos" / "x86_64").absolute()
    assert f"management OS x86_64 missing: building it into {out}" in text
    cache = tmp_path / "cache"
    assert f"management OS x86_64: pretending to build into {out} (cache {cache})" in text
    assert "management OS x86_64 ready: built in" in text
    assert "closing how-to" not in text
