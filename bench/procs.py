"""The processes under test and their meters: pxed (``twistd -n pxed``, from
the working tree or a snapshot of a commit), nginx (sendfile on), and the CPU
time they use during a transfer."""

from __future__ import annotations

import http.client
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, BenchError, MiB, free_port, log, run_text

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- CPU accounting -----------------------------------------------------------


def proc_cpu(pid: int, tid: int | None = None) -> float:
    """CPU seconds (user + system) of a process, or of one of its threads.
    A process's figure includes threads that have already exited."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def children_cpu() -> float:
    """CPU seconds of the reaped children of this process (curl, dd)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """CPU used during one transfer by the server (its main thread, i.e. the
    reactor, and the rest) and by the client process that did the transfer."""

    def __init__(self, server_pid: int | None, with_children: bool = False) -> None:
        self.pid = server_pid
        self.with_children = with_children

    def _server(self) -> tuple[float, float]:
        if self.pid is None:
            return 0.0, 0.0
        total = proc_cpu(self.pid)
        if self.with_children:
            total += sum(proc_cpu(c) for c in proc_children(self.pid))
        return total, proc_cpu(self.pid, self.pid)

    def __enter__(self) -> CpuMeter:
        self.t0 = time.monotonic()
        self.s0, self.m0 = self._server()
        self.c0 = children_cpu()
        return self

    def __exit__(self, *exc) -> None:
        wall = max(time.monotonic() - self.t0, 1e-9)
        s1, m1 = self._server()
        c1 = children_cpu()
        # Percent of one core over the wall time of the transfer.
        self.result = {
            "server_cpu_pct": round(100 * (s1 - self.s0) / wall, 1),
            "server_main_thread_cpu_pct": round(100 * (m1 - self.m0) / wall, 1),
            "server_other_threads_cpu_pct": round(
                100 * ((s1 - self.s0) - (m1 - self.m0)) / wall, 1
            ),
            "client_cpu_pct": round(100 * (c1 - self.c0) / wall, 1),
        }


# -- the processes under test ------------------------------------------------


class Pxed:
    def __init__(
        self,
        work: Path,
        timeout: float,
        source: Path = ROOT,
        env: list[str] | None = None,
        options: list[str] | None = None,
    ) -> None:
        self.work = work
        # More command-line options for `twistd pxed` (e.g. --boot-policy).
        self.options = list(options or [])
        # Extra environment (KEY=VALUE), to try tunings such as malloc settings.
        self.extra_env = dict(e.split("=", 1) for e in env or [])
        # The tree pxed is run from: the working tree, or a snapshot of a commit.
        self.source = source
        self.data = work / "data"
        self.port = free_port()
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.token = ""
        self.auth_file = work / "auth.header"

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        # twistd run by this very interpreter (not through a shell shim), so
        # the process we watch (its PID, its RSS) is the server itself.
        script = Path(sys.executable).parent / "twistd"
        twistd = (
            [sys.executable, str(script)]
            if script.is_file()
            else [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        )
        args = [
            "-n", "--pidfile=", "pxed",
            "--port", f"tcp:{self.port}:interface=127.0.0.1",
            "--data-dir", str(self.data),
            *self.options,
        ]  # fmt: skip
        cmd = [*twistd, *args]
        log(f"starting pxed: twistd {' '.join(args)}")
        self.logfile = open(self.work / "pxed.log", "ab")
        env = {**os.environ, **self.extra_env}
        # The tree first on the path, whether or not pxed is installed
        # (twistd's plugin search and the imports then find this tree).
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.source), env.get("PYTHONPATH", "")) if p
        )
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.source,
            env=env,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"pxed exited with {self.proc.returncode}; see {self.logfile.name}"
                )
            try:
                status, _ = self.request("GET", "/healthz", auth=False)
                if status == 200 and (self.data / "admin.token").exists():
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise BenchError(f"pxed did not answer /healthz within {self.timeout:.0f}s")
        self.token = (self.data / "admin.token").read_text().strip()
        fd = os.open(self.auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"Authorization: Bearer {self.token}\n")
        log(f"pxed up, pid {self.proc.pid}, port {self.port}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, method: str, path: str, body=None, auth: bool = True) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            headers = {"Accept": "application/json"}
            if auth:
                headers["Authorization"] = f"Bearer {self.token}"
            if body is not None:
                body = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def create_image(self, name: str) -> str:
        status, data = self.request("POST", "/image", {"Name": name, "Size": MiB})
        if status != 201:
            raise BenchError(f"POST /image: {status} {data[:200]!r}")
        return json.loads(data)["UUID"]

    def create_machine(self, mac: str, name: str, arch: str = "x86_64") -> None:
        machine = {
            "Name": name,
            "Architecture": arch,
            "Managed": True,
            "MacAddresses": [{"Mac": mac}],
        }
        status, data = self.request("POST", "/machine", machine)
        if status != 201:
            raise BenchError(f"POST /machine: {status} {data[:200]!r}")

    def delete_image(self, image_uuid: str) -> None:
        status, data = self.request("DELETE", f"/image/{image_uuid}")
        if status != 200:
            raise BenchError(f"DELETE /image/{image_uuid}: {status} {data[:200]!r}")

    def rss_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in kB."""
        rss = hwm = 0
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        return rss, hwm

    def reset_hwm(self) -> bool:
        """Reset VmHWM to the current RSS (Linux 4.0+), so that the peak of a
        phase is not the peak of the whole run."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            log("stopping pxed")
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.logfile.close()


NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {connections}; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
{locations}        location / {{ }}
    }}
}}
"""


class Nginx:
    def __init__(
        self,
        work: Path,
        root: Path,
        timeout: float,
        connections: int = 64,
        locations: str = "",
        port: int | None = None,
    ) -> None:
        self.dir = work / "nginx"
        self.root = root
        self.port = port if port is not None else free_port()
        self.timeout = timeout
        # worker_connections, and more `location` blocks before `location /`
        self.connections = connections
        self.locations = locations
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
        if exe is None:
            raise BenchError("nginx is not installed (Debian: apt-get install nginx-light)")
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        # As root, nginx workers would switch to an unprivileged user that
        # cannot read pxed's data dir (mode 0750).
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf.write_text(
            NGINX_CONF.format(
                user=user,
                dir=self.dir,
                port=self.port,
                root=self.root,
                connections=self.connections,
                nofile=2 * self.connections + 64,
                locations=self.locations,
            )
        )
        cmd = [exe, "-p", f"{self.dir}/", "-e", f"{self.dir}/error.log", "-c", str(conf)]
        log(f"starting nginx: {' '.join(cmd)}")
        self.stderr = open(self.dir / "stderr.log", "ab")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=self.stderr, start_new_session=True
        )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.dir / "stderr.log").read_text(errors="replace").strip()
                raise BenchError(f"nginx exited with {self.proc.returncode}: {err[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise BenchError(f"nginx did not listen within {self.timeout:.0f}s")
        log(f"nginx up, pid {self.proc.pid}, port {self.port}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        log("stopping nginx")
        self.proc.send_signal(signal.SIGQUIT)  # graceful shutdown
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.stderr.close()


# -- pxed from a commit ------------------------------------------------------


def pxed_revision(ref: str | None) -> str:
    git = ["git", "-C", str(ROOT)]
    if ref is None:
        return run_text([*git, "describe", "--always", "--dirty"]) + " (working tree)"
    return run_text([*git, "rev-parse", "--short", f"{ref}^{{commit}}"]) + f" ({ref})"


def snapshot(ref: str, dest: Path) -> Path:
    """The files of commit *ref* in *dest*, to run pxed from while the
    working tree is being edited."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref],
        capture_output=True,
        timeout=120,
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {ref}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, timeout=120)
    return dest
