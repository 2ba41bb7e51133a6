"""The management OS at start (pxed/mgmtosbuild.py): a missing one is
reported with the command that builds it, /healthz says each
architecture's state, and while a build runs its machines are told to boot
from disk.  The real first start is tests/e2e/test_firstrun.py; here a
stand-in script plays build.sh, so the test holds the build open as long as
it likes.

And what the real build script (pxed/mgmtos/build.sh) makes: an initramfs
whose python3, from Debian's packages, imports what the agent needs and
starts pxed's agent without compiling anything, with none of the shell
agent's tools left, the same bytes from the same packages, and a second
build that reuses the cache."""

from __future__ import annotations

import os
import platform
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
import pytest_twisted
import zstandard

from pxed import mgmtosbuild
from pxed.config import MGMTOS_BUILD_ENV
from tests.helpers import MAC, add_machine, enqueue, eventually, missing, new_image, only_on

ROOT = Path(__file__).parent.parent
on_sqlite = only_on("sqlite", "about the management OS's files, not the database")

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


@on_sqlite
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


@on_sqlite
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


# --- the real build -------------------------------------------------------------


def _can_build() -> None:
    debian = Path("/etc/debian_version").exists()
    if os.geteuid() != 0 or platform.machine() != "x86_64" or not debian:
        missing("pxed/mgmtos/build.sh builds only as root on a Debian x86_64 host")


def _cache() -> Path:
    """build.sh's cache, which the e2e tests and pxed's own build share."""
    return Path(os.environ.get("PXED_MGMTOS_CACHE", "/var/cache/pxed/mgmtos"))


@dataclass
class Built:
    out: Path
    log: str

    @property
    def initramfs(self) -> bytes:
        return (self.out / "initramfs").read_bytes()


def _build(out: Path, cache: Path) -> Built:
    done = subprocess.run(
        ["bash", str(mgmtosbuild.SCRIPT), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "LC_ALL": "C", "PXED_MGMTOS_CACHE": str(cache)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return Built(out, done.stderr)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    _can_build()
    return _build(tmp_path_factory.mktemp("mgmtos"), _cache())


def _read(f: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            raise AssertionError(f"the initramfs ends inside an entry ({len(data)} of {n} bytes)")
        data += chunk
    return data


def _entries(f: BinaryIO) -> Iterator[tuple[str, int, int, bytes]]:
    """(name, mode, rdev, data) of every entry of the newc archives in *f*,
    one after another as the kernel reads them (zero padding between)."""
    pending = b""
    while True:
        magic = pending + f.read(6 - len(pending))
        pending = b""
        while magic.startswith(b"\0"):
            magic = magic.lstrip(b"\0")
            more = f.read(6 - len(magic))
            if not more:
                return
            magic += more
        if not magic:
            return
        assert magic == b"070701", f"not a newc header: {magic!r}"
        fields = [int(_read(f, 8), 16) for _ in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        rdev = os.makedev(fields[9], fields[10])
        name = _read(f, namesize)[:-1].decode()
        _read(f, (-(110 + namesize)) % 4)
        data = _read(f, size)
        _read(f, (-size) % 4)
        if name == "TRAILER!!!":
            continue
        yield name, mode, rdev, data


def _unpack(initramfs: Path, into: Path) -> list[str]:
    """Unpack *initramfs* (zstd frames of cpio archives) into *into* as the
    kernel does, later archives over earlier ones; the names it holds."""
    names = []
    dctx = zstandard.ZstdDecompressor()
    with initramfs.open("rb") as raw, dctx.stream_reader(raw, read_across_frames=True) as f:
        for name, mode, rdev, data in _entries(f):
            names.append(name)
            path = into / name
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFDIR:
                path.mkdir(exist_ok=True)
                path.chmod(stat.S_IMODE(mode))
                continue
            if path.is_symlink() or path.exists():
                path.unlink()
            if kind == stat.S_IFLNK:
                path.symlink_to(data.decode())
            elif kind == stat.S_IFCHR:
                os.mknod(path, mode, rdev)
            else:
                assert kind == stat.S_IFREG, f"{name}: mode {mode:o}"
                path.write_bytes(data)
                path.chmod(stat.S_IMODE(mode))
    return names


@pytest.fixture(scope="module")
def tree(built: Built, tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("initramfs")
    return root, _unpack(built.out / "initramfs", root)


def _in_tree(root: Path, *command: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["chroot", str(root), *command],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
    )


def _which(root: Path, program: str) -> Path:
    """*program* on init's PATH in the tree."""
    for where in ("usr/sbin", "usr/bin", "sbin", "bin"):
        if (root / where / program).is_symlink() or (root / where / program).exists():
            return root / where / program
    raise AssertionError(f"no {program} in the initramfs")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.slow
def test_the_initramfs_starts_the_agent_on_debians_python(tree):
    root, _ = tree
    # init starts the agent from the package it was built from.
    assert (root / "init").read_text() == (ROOT / "pxed/mgmtos/init").read_text()
    assert "/usr/bin/python3 -m pxed.agent" in (root / "init").read_text()
    for source in [ROOT / "pxed/__init__.py", *(ROOT / "pxed/agent").glob("*.py")]:
        packed = root / "usr/lib/pxed" / source.relative_to(ROOT)
        assert packed.read_bytes() == source.read_bytes(), packed
    # No interpreter run under QEMU has to compile: everything it imports
    # here (the stdlib, zstandard, the agent) is bytecode already, and
    # running it leaves no new file behind.
    before = _files(root)
    imports = _in_tree(
        root,
        "/usr/bin/python3",
        "-c",
        "import hashlib, zlib, ssl, json, http.client, zstandard, ctypes, subprocess, threading,"
        " dataclasses, argparse, socket; print(hashlib.sha256.__module__,"
        " zstandard.backend_c.__name__, zlib.decompress(zlib.compress(b'ok')).decode())",
    )
    assert imports.returncode == 0, imports.stderr
    # sha256 is OpenSSL's (libcrypto, not the built-in one), zstandard its C backend.
    assert imports.stdout.split() == ["_hashlib", "zstandard.backend_c", "ok"]
    helped = _in_tree(
        root, "/usr/bin/python3", "-m", "pxed.agent", "--help", PYTHONPATH="/usr/lib/pxed"
    )
    assert helped.returncode == 0, helped.stderr
    assert "pxed.url" in helped.stdout
    assert _files(root) == before
    # The inventory's dmidecode and busybox's applets for init and the agent.
    assert _in_tree(root, "/usr/sbin/dmidecode", "--version").returncode == 0
    for applet in ("mount", "umount", "losetup", "blockdev", "reboot", "poweroff", "sync", "ip"):
        assert os.readlink(_which(root, applet)) == "/bin/busybox", applet


@pytest.mark.slow
def test_the_shell_agents_tools_are_gone(tree):
    root, names = tree
    for gone in ("curl", "openssl", "agent.sh", "json.awk", "libcurl.so.4"):
        assert not [n for n in names if n.rsplit("/", 1)[-1] == gone], gone
    # tee, dd and sha256sum are busybox's again (the agent is Python now).
    for tool in ("tee", "dd", "sha256sum"):
        assert os.readlink(_which(root, tool)) == "/bin/busybox", tool
    # Nothing of what the build trims: docs, locales, iconv modules, test suites.
    for trimmed in (
        "usr/share/doc",
        "usr/share/man",
        "usr/lib/python3.11/test",
        "usr/lib/python3.11/idlelib",
    ):
        assert not (root / trimmed).exists(), trimmed
    assert not list(root.glob("usr/lib/*-linux-gnu/gconv"))


@pytest.mark.slow
def test_a_warm_build_reuses_the_cache_and_makes_the_same_bytes(built, tmp_path):
    again = _build(tmp_path / "out", _cache())
    assert again.initramfs == built.initramfs
    assert (again.out / "vmlinuz").read_bytes() == (built.out / "vmlinuz").read_bytes()
    # Nothing downloaded, unpacked or compiled again.
    assert "downloading" not in again.log and "unpacking" not in again.log, again.log


@pytest.mark.slow
def test_the_userland_built_anew_makes_the_same_bytes(built, tmp_path):
    """Reproducible from the packages: a cache holding only the same
    package files (and the kernel's modules) builds the userland again,
    compiling and compressing it anew, into the same initramfs."""
    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    for deb in (_cache() / "debs").glob("*.deb"):
        try:
            os.link(deb, cache / "debs" / deb.name)
        except OSError:
            shutil.copy2(deb, cache / "debs" / deb.name)
    shutil.copytree(_cache() / "kernel", cache / "kernel", symlinks=True)
    anew = _build(tmp_path / "out", cache)
    assert "trimming and compiling the userland" in anew.log
    assert "downloading" not in anew.log, anew.log
    assert anew.initramfs == built.initramfs
