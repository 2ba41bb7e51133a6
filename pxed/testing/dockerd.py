"""A Docker engine for the builder tests and bench/build.py, and the busybox
base image their Dockerfiles start from (no registry is reachable here):
``$DOCKER_HOST``, the local socket, else a dockerd started with vfs storage
on its own socket, which every user shares."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

BASE_IMAGE = "pxed-test-busybox:latest"
OWN_SOCKET = Path("/run/pxed-test-docker/docker.sock")
APPLETS = ("sh", "echo", "cat", "ls", "mkdir", "true", "false", "sleep", "touch", "rm", "cp")


class NoEngine(Exception):
    """No Docker engine answers and none can be started here."""


def reachable(host: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


def find_or_start_engine() -> tuple[str, subprocess.Popen | None]:
    """$DOCKER_HOST or the local socket if one answers, else a dockerd
    started here (Debian's docker.io, vfs storage, its own socket); the
    process is returned so the caller can stop it."""
    for host in (
        os.environ.get("DOCKER_HOST"),
        "unix:///var/run/docker.sock",
        f"unix://{OWN_SOCKET}",
    ):
        if host and reachable(host):
            return host, None
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise NoEngine("no Docker engine and no dockerd: apt-get install docker.io")
    if os.geteuid() != 0:
        raise NoEngine("no Docker engine reachable, and starting dockerd needs root")
    run = OWN_SOCKET.parent
    run.mkdir(parents=True, exist_ok=True)
    log = open(run / "dockerd.log", "ab")
    proc = subprocess.Popen(
        [
            dockerd,
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            f"--host=unix://{OWN_SOCKET}",
            "--data-root=/var/lib/pxed-test-docker",
            f"--exec-root={run}/exec",
            f"--pidfile={run}/docker.pid",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    host = f"unix://{OWN_SOCKET}"
    deadline = time.monotonic() + 60
    while not reachable(host):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise NoEngine(f"dockerd did not start; see {run / 'dockerd.log'}")
        time.sleep(0.3)
    return host, proc


def stop_engine(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def shared_engine() -> Iterator[str]:
    """find_or_start_engine's engine, for processes that use it at the same
    time (a test run's xdist workers): one starts it, and a dockerd started
    so is stopped by the last to leave, whichever process that is."""
    run = OWN_SOCKET.parent
    run.mkdir(parents=True, exist_ok=True)
    started = run / "started-for-sharing"  # holds its pid
    users = open(run / "users.lock", "a")  # a shared lock per user
    try:
        with _flocked(run / "start.lock"):
            host, proc = find_or_start_engine()
            if proc is not None:
                started.write_text(str(proc.pid))
            fcntl.flock(users, fcntl.LOCK_SH)
        yield host
    finally:
        with _flocked(run / "start.lock"):
            fcntl.flock(users, fcntl.LOCK_UN)
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another user is still there
            else:
                with contextlib.suppress(FileNotFoundError):
                    _stop_pid(int(started.read_text()))
                    started.unlink()
            users.close()


def _stop_pid(pid: int) -> None:
    """Stops a dockerd that may be another process's child (so no wait())."""
    try:
        if b"dockerd" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return  # a killed run's pid, since reused
    except FileNotFoundError:
        return
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reaps it if it is ours
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                return
            if state == "Z":
                return
            time.sleep(0.2)


def busybox_rootfs_tar(path: Path) -> Path:
    """A root filesystem with busybox-static and its applet links."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise NoEngine("busybox not found: apt-get install busybox-static")
    with tarfile.open(path, "w") as tar:
        for d in ("bin", "etc", "tmp", "root"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, "bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return path


def import_base_image(host: str, work: Path) -> str:
    """The busybox base image, imported into the engine if missing."""
    import docker

    client = docker.DockerClient(base_url=host, timeout=120)
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        tar = busybox_rootfs_tar(work / "rootfs.tar")
        repo, tag = BASE_IMAGE.split(":")
        client.api.import_image(src=str(tar), repository=repo, tag=tag, changes=['CMD ["/bin/sh"]'])
    client.close()
    return BASE_IMAGE
