"""The machine image step: each boot recorded in /pxed/ on the machine's
own ext4 image, uploaded back as a new version; unchanged (with a
warning) when it cannot be mounted."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import pytest_twisted

from tests.agent.conftest import data, disk_file, sha256
from tests.helpers import MAC, MIB, missing


def read_ext4(image: Path, path: str) -> str:
    debugfs = shutil.which("debugfs")
    if debugfs is None:
        missing("debugfs not found: apt-get install e2fsprogs")
    done = subprocess.run(
        [debugfs, "-R", f"cat {path}", str(image)], capture_output=True, text=True, timeout=30
    )
    return done.stdout


async def machine_image(server) -> tuple[str, list[dict]]:
    uuid = (await server.admin.get(f"/machine/{MAC}")).json()["ImageUUID"]
    return uuid, (await server.admin.get(f"/image/{uuid}")).json()["Versions"]


def can_loop_mount() -> bool:
    return os.geteuid() == 0 and Path("/dev/loop-control").exists() and bool(shutil.which("mount"))


@pytest_twisted.ensureDeferred
async def test_the_boot_is_recorded_in_the_machine_image(machine_with, server, tmp_path):
    if not can_loop_mount():
        pytest.skip("mounting the machine image needs root and loop devices (/dev/loop-control)")
    machine, [(_, version)] = await machine_with([(data(MIB), "none", False)], name="lab")
    disk = disk_file(tmp_path / "disk", 2 * MIB)
    own, before = await machine_image(server)

    run = await machine.agent([disk])

    assert run.code == 0, run.output
    assert "recorded this boot in the machine image" in run.output, run.output
    _, after = await machine_image(server)
    assert len(after) == len(before) + 1
    latest = after[-1]
    stored = tmp_path / "machine.img"
    stored.write_bytes((await server.admin.get(f"/image/{own}/{latest['Version']}")).body)
    assert sha256(stored.read_bytes()) == latest["Sha256"]
    last_boot = dict(
        line.split("=", 1) for line in read_ext4(stored, "/pxed/last-boot").splitlines()
    )
    assert last_boot["setup_name"] == "lab" and last_boot["kernel"] == "6.1.0-test"
    assert last_boot["deployed"].startswith(f"img0 v{version} -> {disk} ({MIB} bytes, ")
    history = read_ext4(stored, "/pxed/history").splitlines()
    assert len(history) == 1 and f"work={last_boot['work']}" in history[0]


@pytest_twisted.ensureDeferred
async def test_a_machine_image_that_does_not_mount_goes_back_unchanged(
    machine_with, server, tmp_path
):
    machine, _ = await machine_with([(data(MIB), "none", False)])
    disk = disk_file(tmp_path / "disk", 2 * MIB)
    # A mount that refuses, first on PATH: as a kernel without ext4 would.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mount"
    fake.write_text("#!/bin/sh\necho 'mount: unknown filesystem type ext4' >&2\nexit 32\n")
    fake.chmod(0o755)
    _, before = await machine_image(server)

    run = await machine.agent([disk], env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})

    assert run.code == 0, run.output
    assert "cannot mount the machine image (mount: unknown filesystem type ext4)" in run.output
    assert "uploading it unchanged" in run.output
    _, after = await machine_image(server)
    assert len(after) == len(before) + 1 and after[-1]["Sha256"] == before[-1]["Sha256"]
    assert (await machine.work())["State"] == "deployed"
