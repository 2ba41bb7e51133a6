"""pxed in the lab: ``twistd -n pxed`` run with ``ip netns exec`` in pxed's
namespace (as tests/e2e/test_firstrun.py runs it, from this worktree), on
every interface there: the lab's (where the VMs reach it) and api0 (where
the tests do, over HTTP with the admin token)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.helpers import TWISTD, Client, wait_for
from tests.realnet import lab
from tests.vmfixtures import MGMTOS_CMDLINE

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LabPxed:
    proc: subprocess.Popen
    data_dir: Path
    log: Path
    port: int
    # What the tests use, through the API link.
    url: str
    anonymous: Client
    admin: Client

    @property
    def lab_url(self) -> str:
        """Where the lab's machines reach pxed."""
        return f"http://{lab.PXED_ADDRESS}:{self.port}"

    def asked(self, mac: str) -> Callable[[], bool]:
        """Whether *mac*'s iPXE has fetched its answer (/ipxe/<mac>) yet."""
        path = "/ipxe/" + quote(mac, safe="")
        return lambda: path in self.log.read_text(errors="replace")

    def healthz(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as r:  # noqa: S310
            return json.loads(r.read())

    def dnsmasq_pid(self) -> int | None:
        """The pid of pxed's dnsmasq (its child), None if there is none."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)
                comm = fields[0].split("(", 1)[1]
                ppid = int(fields[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if comm == "dnsmasq" and ppid == self.proc.pid:
                return int(stat.parent.name)
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start(workdir: Path, static_dir: Path, port: int, config_text: str = "") -> LabPxed:
    """pxed with its data in *workdir*, serving *static_dir*, on *port*,
    with *config_text* (TOML settings) beneath the lab's own."""
    data_dir = workdir / "data"
    config = workdir / "pxed.toml"
    config.write_text(
        f'port = "tcp:{port}"\n'
        f'data_dir = "{data_dir}"\n'
        f'static_dir = "{static_dir}"\n'
        'mgmtos_build = "off"\n'
        f"{config_text}\n"
        f'[mgmtos.x86_64]\ncmdline = "{MGMTOS_CMDLINE}"\n'
    )
    log = workdir / "pxed.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            lab.netns_exec(lab.PXED, *TWISTD, "-n", "--pidfile=", "pxed", "--config", str(config)),
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://{lab.API_PXED}:{port}"
    try:
        wait_for(f"{url}/healthz", proc, timeout=60)
    except AssertionError as e:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{e}\n{log.read_text()}") from None
    token = (data_dir / "admin.token").read_text().strip()
    anonymous = Client(url)
    return LabPxed(proc, data_dir, log, port, url, anonymous, anonymous.bearer(token))


def wait_until(check: Callable[[], bool], px: LabPxed, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"pxed: not within {timeout} s:\n{px.log.read_text()[-5000:]}")
        time.sleep(0.2)
