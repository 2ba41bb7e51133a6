#!/usr/bin/env python3
"""pxed throughput and memory benchmark (a measurement, not a test).

Starts pxed for real (``twistd -n pxed``) on a loopback port with a data dir
under ``bench/.work/`` (the same filesystem as the repository, never /tmp),
and in the same run measures:

1. download: ``GET /image/{uuid}/1`` of a cached N GiB version, against nginx
   (sendfile on) serving the very same file;
2. upload: ``POST /image/{uuid}`` of an N GiB file (hashed, fsynced and
   renamed before pxed answers), against ``dd bs=1M conv=fdatasync`` to the
   same filesystem;
3. peak RSS of the pxed process during four concurrent N GiB uploads.

curl is the load generator.  Results go to ``bench/results/latest.json`` and
``bench/results/latest.md``.  Usage::

    python bench/run.py [--size-gib 2] [--runs 3] [--out bench/results]

Traffic goes to 127.0.0.1 only.  Every step has a timeout; pxed and nginx are
stopped and the large files removed whatever happens.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MiB = 1024 * 1024
GiB = 1024 * MiB
GB = 1e9  # throughput is reported in GB/s (10^9 bytes per second)
MB = 1e6  # memory is reported in MB (10^6 bytes), the stricter reading of the target
CLK_TCK = os.sysconf("SC_CLK_TCK")

TARGETS = {
    "download_ratio": (">=", 0.8, "pxed download / nginx (sendfile on)"),
    "upload_ratio": (">=", 0.6, "pxed upload / dd bs=1M conv=fdatasync"),
    "peak_rss_mb": ("<", 120.0, "pxed peak RSS, four concurrent uploads (MB)"),
}


PHASES = ("download", "upload", "rss")


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        self, work: Path, timeout: float, source: Path = ROOT, env: list[str] | None = None
    ) -> None:
        self.work = work
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
        ]  # fmt: skip
        cmd = [*twistd, *args]
        log(f"starting pxed: twistd {' '.join(args)}")
        self.logfile = open(self.work / "pxed.log", "ab")
        env = {**os.environ, **self.extra_env}
        if self.source != ROOT:
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
        if status != 200:
            raise BenchError(f"POST /image: {status} {data[:200]!r}")
        return json.loads(data)["UUID"]

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
events {{ worker_connections 64; }}
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
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


class Nginx:
    def __init__(self, work: Path, root: Path, timeout: float) -> None:
        self.dir = work / "nginx"
        self.root = root
        self.port = free_port()
        self.timeout = timeout
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
        conf.write_text(NGINX_CONF.format(user=user, dir=self.dir, port=self.port, root=self.root))
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


# -- clients -----------------------------------------------------------------

CURL_FORMAT = "%{http_code} %{size_download} %{size_upload} %{time_total}"


def curl_args(timeout: float) -> list[str]:
    exe = shutil.which("curl")
    if exe is None:
        raise BenchError("curl is not installed (Debian: apt-get install curl)")
    return [exe, "-sS", "--max-time", f"{timeout:.0f}", "-w", CURL_FORMAT]


def parse_curl(out: str) -> tuple[int, int, int, float]:
    code, down, up, total = out.split()
    return int(code), int(down), int(up), float(total)


def curl_download(url: str, size: int, timeout: float, auth_file: Path | None) -> float:
    """Download *url* to /dev/null; seconds from start to last byte."""
    cmd = [*curl_args(timeout), "-o", "/dev/null"]
    if auth_file is not None:
        cmd += ["-H", f"@{auth_file}"]
    proc = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=timeout + 30)
    if proc.returncode != 0:
        raise BenchError(f"curl GET {url}: exit {proc.returncode}: {proc.stderr.strip()}")
    code, down, _, total = parse_curl(proc.stdout)
    if code != 200 or down != size:
        raise BenchError(f"GET {url}: status {code}, {down} bytes instead of {size}")
    return total


def py_download(url: str, size: int, timeout: float, auth_file: Path | None) -> float:
    """The same as curl_download with bench/httpget.py (1 MiB reads)."""
    cmd = [sys.executable, str(BENCH / "httpget.py"), url, "--timeout", f"{timeout:.0f}"]
    if auth_file is not None:
        cmd += ["--header-file", str(auth_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
    if proc.returncode != 0:
        raise BenchError(f"httpget {url}: exit {proc.returncode}: {proc.stderr.strip()}")
    answer = json.loads(proc.stdout)
    if answer["status"] != 200 or answer["bytes"] != size:
        raise BenchError(f"GET {url}: status {answer['status']}, {answer['bytes']} of {size} bytes")
    return answer["seconds"]


DOWNLOAD_CLIENTS = {"python": py_download, "curl": curl_download}


def upload_cmd(pxed: Pxed, image_uuid: str, src: Path, resp: Path, timeout: float) -> list[str]:
    return [
        *curl_args(timeout),
        "-X", "POST", "-T", str(src),
        "-H", "Content-Type: application/octet-stream",
        "-H", "Accept: application/json",
        # No 100-continue round trip: send the body at once.
        "-H", "Expect:",
        "-H", f"@{pxed.auth_file}",
        "-o", str(resp),
        pxed.url(f"/image/{image_uuid}"),
    ]  # fmt: skip


def check_upload(out: str, resp: Path, size: int, sha256: str) -> float:
    code, _, up, total = parse_curl(out)
    body = resp.read_text(errors="replace")
    if code != 200 or up != size:
        raise BenchError(f"upload: status {code}, sent {up} of {size} bytes: {body[:300]}")
    answer = json.loads(body)
    if answer.get("Size") != size or answer.get("Sha256") != sha256:
        raise BenchError(f"upload: pxed recorded {answer}, expected size {size} sha256 {sha256}")
    return total


def curl_upload(pxed: Pxed, image_uuid: str, src: Path, size: int, sha256: str, timeout: float):
    resp = pxed.work / f"upload-{image_uuid}.json"
    cmd = upload_cmd(pxed, image_uuid, src, resp, timeout)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
    if proc.returncode != 0:
        raise BenchError(f"curl upload: exit {proc.returncode}: {proc.stderr.strip()}")
    try:
        return check_upload(proc.stdout, resp, size, sha256), json.loads(resp.read_text())
    finally:
        resp.unlink(missing_ok=True)


def dd_write(src: Path, dst: Path, timeout: float) -> float:
    cmd = ["dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fdatasync"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise BenchError(f"dd: exit {proc.returncode}: {proc.stderr.strip()}")
    return elapsed


# -- the source file -----------------------------------------------------------


def make_source(path: Path, size: int) -> str:
    """Write *size* random bytes to *path*, flush them to disk (so that no
    writeback of it disturbs the timings) and leave them in the page cache.
    Returns the sha256."""
    log(f"writing {size / GiB:.2f} GiB of random data to {path}")
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(MiB, left))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
        f.flush()
        os.fsync(f.fileno())
    warm(path)
    return h.hexdigest()


def warm(path: Path) -> None:
    """Read a file once so it sits in the page cache."""
    buf = bytearray(MiB)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


# -- machine description ---------------------------------------------------------


def run_text(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(work: Path) -> dict:
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    df = run_text(["df", "-T", str(work)]).splitlines()
    fs_dev, fs_type = (df[-1].split()[:2]) if len(df) > 1 else ("?", "?")
    try:
        import twisted

        twisted_version = twisted.__version__
    except ImportError:
        twisted_version = "?"
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "work_dir": str(work),
        "work_dir_device": fs_dev,
        "work_dir_fs": fs_type,
        "python": platform.python_version(),
        "twisted": twisted_version,
        "nginx": nginx.split("/", 1)[-1] if nginx else "?",
        "curl": run_text(["curl", "--version"]).split("\n")[0].split(" ")[1],
    }


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


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


# -- the benchmark -----------------------------------------------------------------


def gbps(size: int, seconds: float) -> float:
    return size / seconds / GB


def summary(size: int, times: list[float]) -> dict:
    rates = [gbps(size, t) for t in times]
    return {
        "seconds": [round(t, 3) for t in times],
        "gbps": [round(r, 3) for r in rates],
        "median_gbps": round(statistics.median(rates), 3),
        "min_gbps": round(min(rates), 3),
        "max_gbps": round(max(rates), 3),
    }


def median_cpu(samples: list[dict]) -> dict:
    return {k: round(statistics.median(s[k] for s in samples), 1) for k in samples[0]}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.size = int(args.size_gib * GiB)
        self.runs = args.runs
        self.work = Path(args.work).resolve()
        # Generous per-transfer limit: 20 MB/s at worst, at least 2 minutes.
        self.timeout = max(120.0, self.size / 20e6)
        self.pxed: Pxed | None = None
        self.nginx: Nginx | None = None
        self.src = self.work / "src.bin"
        self.ddout = self.work / "ddout"
        self.get = DOWNLOAD_CLIENTS[args.client]
        self.rss_milestones: dict[str, float] = {}

    def milestone(self, name: str) -> None:
        """pxed's RSS between phases: where memory grows and stays."""
        assert self.pxed is not None
        self.rss_milestones[name] = round(self.pxed.rss_kb()[0] * 1024 / MB, 1)

    def check_filesystem(self) -> None:
        df = run_text(["df", "-T", str(self.work)]).splitlines()
        fs = df[-1].split()[1] if len(df) > 1 else "?"
        if fs in ("tmpfs", "ramfs"):
            raise BenchError(
                f"{self.work} is on {fs}: use a work dir on the disk pxed's data dir lives on"
            )

    def check_space(self) -> None:
        # Source, four uploads at once, and a margin of one more version.
        need = 6 * self.size + GiB
        free = shutil.disk_usage(self.work).free
        if free < need:
            raise BenchError(f"{self.work}: {free / GiB:.1f} GiB free, {need / GiB:.1f} GiB needed")
        log(f"{self.work}: {free / GiB:.1f} GiB free, this run needs about {need / GiB:.1f} GiB")

    def run(self) -> dict:
        self.work.mkdir(parents=True, exist_ok=True)
        self.check_filesystem()
        self.check_space()
        result: dict = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "command": " ".join(["python", "bench/run.py", *sys.argv[1:]]),
            "machine": machine_info(self.work),
            "size_bytes": self.size,
            "size_gib": self.args.size_gib,
            "runs": self.runs,
            "download_client": self.args.client,
            # Other work on the machine skews everything: say how busy it was.
            "loadavg_before": loadavg(),
        }
        source = ROOT
        if self.args.ref is not None:
            source = snapshot(self.args.ref, self.work / "src")
            log(f"running pxed from {self.args.ref} ({source})")
        result["pxed"] = pxed_revision(self.args.ref)
        self.sha256 = make_source(self.src, self.size)
        self.pxed = Pxed(self.work, timeout=60, source=source, env=self.args.pxed_env)
        result["pxed_env"] = self.args.pxed_env
        self.pxed.start()
        self.milestone("after_start")
        phases = self.args.phases
        if "download" in phases:
            result["download"] = self.download()
            self.milestone("after_download")
        if "upload" in phases:
            result["upload"] = self.upload()
            self.milestone("after_upload")
        if "rss" in phases:
            result["rss"] = self.peak_rss()
            self.milestone("after_concurrent_uploads")
        result["rss_milestones_mb"] = self.rss_milestones
        result["loadavg_after"] = loadavg()
        result["targets"] = self.judge(result)
        return result

    def download(self) -> dict:
        assert self.pxed is not None
        pxed = self.pxed
        log("download: uploading version 1")
        image = pxed.create_image("bench-download")
        curl_upload(pxed, image, self.src, self.size, self.sha256, self.timeout)
        path = pxed.data / "images" / image / "1.img"
        if path.stat().st_size != self.size:
            raise BenchError(f"{path} is not {self.size} bytes")
        self.nginx = Nginx(self.work, pxed.data / "images", timeout=30)
        self.nginx.start()
        targets = {
            "pxed": (pxed.url(f"/image/{image}/1"), pxed.auth_file, pxed.pid, False),
            "nginx": (self.nginx.url(f"/{image}/1.img"), None, self.nginx.pid, True),
        }
        warm(path)
        for name, (url, auth, _, _) in targets.items():
            log(f"download: warm-up from {name}")
            self.get(url, self.size, self.timeout, auth)
        times: dict[str, list[float]] = {"pxed": [], "nginx": []}
        cpu: dict[str, list[dict]] = {"pxed": [], "nginx": []}
        for i in range(self.runs):
            # Alternate who goes first, so drift on a noisy machine is shared.
            order = ["pxed", "nginx"] if i % 2 == 0 else ["nginx", "pxed"]
            for name in order:
                url, auth, pid, kids = targets[name]
                with CpuMeter(pid, with_children=kids) as m:
                    t = self.get(url, self.size, self.timeout, auth)
                times[name].append(t)
                cpu[name].append(m.result)
                log(
                    f"download {i + 1}/{self.runs} {name}: {gbps(self.size, t):.2f} GB/s {m.result}"
                )
        self.nginx.stop()
        pxed.delete_image(image)
        out = {
            name: {**summary(self.size, times[name]), "cpu": median_cpu(cpu[name])}
            for name in times
        }
        out["ratio"] = round(out["pxed"]["median_gbps"] / out["nginx"]["median_gbps"], 3)
        log(f"download: pxed/nginx = {out['ratio']}")
        return out

    def upload(self) -> dict:
        assert self.pxed is not None
        pxed = self.pxed
        warm(self.src)
        # Untimed: the first upload of a run starts threads and fills pages
        # the guest has not used yet; neither belongs in the figures.
        log("upload: warm-up (untimed)")
        self.prime()
        image = pxed.create_image("bench-upload-warm-up")
        curl_upload(pxed, image, self.src, self.size, self.sha256, self.timeout)
        pxed.delete_image(image)
        times: dict[str, list[float]] = {"pxed": [], "dd": []}
        cpu: dict[str, list[dict]] = {"pxed": [], "dd": []}
        for i in range(self.runs):
            order = ["pxed", "dd"] if i % 2 == 0 else ["dd", "pxed"]
            for name in order:
                self.prime()
                if name == "pxed":
                    image = pxed.create_image(f"bench-upload-{i}")
                    with CpuMeter(pxed.pid) as m:
                        t, _ = curl_upload(
                            pxed, image, self.src, self.size, self.sha256, self.timeout
                        )
                    pxed.delete_image(image)
                else:
                    with CpuMeter(None) as m:
                        t = dd_write(self.src, self.ddout, self.timeout)
                    self.ddout.unlink()
                times[name].append(t)
                cpu[name].append(m.result)
                log(f"upload {i + 1}/{self.runs} {name}: {gbps(self.size, t):.2f} GB/s {m.result}")
        out = {
            name: {**summary(self.size, times[name]), "cpu": median_cpu(cpu[name])}
            for name in times
        }
        out["ratio"] = round(out["pxed"]["median_gbps"] / out["dd"]["median_gbps"], 3)
        log(f"upload: pxed/dd = {out['ratio']}")
        return out

    def prime(self) -> None:
        """Put every timed write on the same footing.  On a VM, filling page
        cache pages is several times slower when the guest gets them from
        memory it has not used lately than when it reuses pages just freed:
        `dd` right after another `dd` ran at 1.9-2.0 GB/s here, right after a
        pxed upload at 0.4-0.7 GB/s.  So each timed run follows an untimed
        write and delete of the same size, and no dirty pages."""
        dd_write(self.src, self.ddout, self.timeout)
        self.ddout.unlink()
        os.sync()

    def peak_rss(self) -> dict:
        assert self.pxed is not None
        pxed = self.pxed
        os.sync()
        images = [pxed.create_image(f"bench-rss-{i}") for i in range(4)]
        rss_before, hwm_run = pxed.rss_kb()
        hwm_reset = pxed.reset_hwm()
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:
            t0 = time.monotonic()
            while not stop.is_set():
                try:
                    samples.append((time.monotonic() - t0, pxed.rss_kb()[0]))
                except OSError:
                    return
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        resps = [pxed.work / f"rss-{i}.json" for i in range(4)]
        timeout = 4 * self.timeout
        log("rss: four concurrent uploads")
        t0 = time.monotonic()
        procs = [
            subprocess.Popen(
                upload_cmd(pxed, image, self.src, resp, timeout),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for image, resp in zip(images, resps, strict=True)
        ]
        try:
            outs = [p.communicate(timeout=timeout + 30) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        wall = time.monotonic() - t0
        stop.set()
        sampler.join(5)
        _, hwm = pxed.rss_kb()
        totals = []
        for p, (out, err), resp in zip(procs, outs, resps, strict=True):
            if p.returncode != 0:
                raise BenchError(f"curl upload: exit {p.returncode}: {err.strip()}")
            totals.append(check_upload(out, resp, self.size, self.sha256))
            resp.unlink()
        for image in images:
            pxed.delete_image(image)
        peak_sampled = max(kb for _, kb in samples)
        # VmHWM catches a peak between two samples, when it could be reset.
        peak_kb = max(peak_sampled, hwm) if hwm_reset else peak_sampled
        out = {
            "uploads": 4,
            "samples": len(samples),
            "interval_ms": 50,
            "rss_before_mb": round(rss_before * 1024 / MB, 1),
            "peak_sampled_rss_mb": round(peak_sampled * 1024 / MB, 1),
            "vmhwm_mb": round(hwm * 1024 / MB, 1),
            "vmhwm_reset_before_phase": hwm_reset,
            "vmhwm_whole_run_before_phase_mb": round(hwm_run * 1024 / MB, 1),
            "peak_rss_mb": round(peak_kb * 1024 / MB, 1),
            "upload_seconds": [round(t, 3) for t in totals],
            "wall_seconds": round(wall, 3),
            "aggregate_gbps": round(gbps(4 * self.size, wall), 3),
        }
        log(f"rss: peak {out['peak_rss_mb']} MB, {out['aggregate_gbps']} GB/s aggregate")
        return out

    @staticmethod
    def judge(result: dict) -> dict:
        values = {
            "download_ratio": result.get("download", {}).get("ratio"),
            "upload_ratio": result.get("upload", {}).get("ratio"),
            "peak_rss_mb": result.get("rss", {}).get("peak_rss_mb"),
        }
        out = {}
        for key, (op, target, what) in TARGETS.items():
            v = values[key]
            if v is None:
                continue  # phase not run
            ok = v >= target if op == ">=" else v < target
            out[key] = {"what": what, "value": v, "target": f"{op} {target}", "pass": ok}
        return out

    def cleanup(self, keep_logs: bool) -> None:
        for proc in (self.nginx, self.pxed):
            if proc is not None:
                try:
                    proc.stop()
                except Exception as e:  # cleanup goes on whatever failed
                    log(f"cleanup: {e}")
        self.src.unlink(missing_ok=True)
        self.ddout.unlink(missing_ok=True)
        if self.pxed is not None:
            shutil.rmtree(self.pxed.data / "images", ignore_errors=True)
        if keep_logs or self.args.keep_work:
            log(f"logs and configs kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


# -- report -------------------------------------------------------------------------


CLIENT_NAMES = {
    "python": "bench/httpget.py, 1 MiB recv_into, to nowhere",
    "curl": "curl -o /dev/null",
}


def markdown(r: dict) -> str:
    m = r["machine"]

    def row(name: str, x: dict) -> str:
        c = x["cpu"]
        return (
            f"| {name} | **{x['median_gbps']:.2f}** | {x['min_gbps']:.2f}–{x['max_gbps']:.2f} "
            f"| {', '.join(f'{v:.2f}' for v in x['gbps'])} "
            f"| {c['server_cpu_pct']:.0f} ({c['server_main_thread_cpu_pct']:.0f}"
            f" + {c['server_other_threads_cpu_pct']:.0f}) "
            f"| {c['client_cpu_pct']:.0f} |"
        )

    head = [
        "| | median GB/s | range | runs | server CPU % (main + other threads) | client CPU % |",
        "|---|---|---|---|---|---|",
    ]
    lines = [
        "# pxed benchmark results",
        "",
        f"- Date: {r['date']}",
        f"- Command: `{r['command']}`",
        f"- pxed: `{r['pxed']}`" + (f", environment {r['pxed_env']}" if r["pxed_env"] else ""),
        f"- Transfer size: {r['size_gib']} GiB ({r['size_bytes']} bytes), "
        f"{r['runs']} timed runs each, median reported; GB = 10^9 bytes, MB = 10^6 bytes",
        "",
        "## Machine",
        "",
        f"- CPUs: {m['nproc']} × {m['cpu_model']}",
        f"- Memory: {m['memory_gib']} GiB",
        f"- Kernel: {m['kernel']}",
        f"- Work dir filesystem: {m['work_dir_fs']} ({m['work_dir_device']})",
        f"- Python {m['python']}, Twisted {m['twisted']}, nginx {m['nginx']}, curl {m['curl']}",
        f"- Load average (1, 5, 15 min) before: {r['loadavg_before']}, "
        f"after: {r['loadavg_after']} (other work on the machine skews the figures)",
        "",
        "## Targets",
        "",
        "| target | measured | goal | result |",
        "|---|---|---|---|",
    ]
    for t in r["targets"].values():
        verdict = "PASS" if t["pass"] else "FAIL"
        lines.append(f"| {t['what']} | {t['value']} | {t['target']} | **{verdict}** |")
    if "download" in r:
        d = r["download"]
        lines += [
            "",
            f"## Download (cached {r['size_gib']} GiB version over loopback, "
            f"client: {CLIENT_NAMES[r['download_client']]})",
            "",
            *head,
            row("pxed `GET /image/{uuid}/1`", d["pxed"]),
            row("nginx, sendfile on, same file", d["nginx"]),
            "",
            f"Ratio pxed / nginx: **{d['ratio']}** (target ≥ 0.8).",
        ]
    if "upload" in r:
        u = r["upload"]
        lines += [
            "",
            f"## Upload ({r['size_gib']} GiB from the page cache; pxed hashes, fsyncs "
            "and renames before it answers)",
            "",
            *head,
            row("pxed `POST /image/{uuid}` (raw body, curl)", u["pxed"]),
            row("`dd bs=1M conv=fdatasync`", u["dd"]),
            "",
            f"Ratio pxed / dd: **{u['ratio']}** (target ≥ 0.6).",
        ]
    if "rss" in r:
        s = r["rss"]
        lines += [
            "",
            "## Peak RSS (four concurrent uploads)",
            "",
            f"- RSS before: {s['rss_before_mb']} MB",
            f"- Peak RSS sampled every {s['interval_ms']} ms ({s['samples']} samples): "
            f"{s['peak_sampled_rss_mb']} MB",
            f"- VmHWM at the end (reset before the phase: {s['vmhwm_reset_before_phase']}): "
            f"{s['vmhwm_mb']} MB",
            f"- Peak RSS: **{s['peak_rss_mb']} MB** (target < 120 MB)",
            f"- Four uploads took {s['wall_seconds']} s together, "
            f"{s['aggregate_gbps']} GB/s aggregate",
        ]
    lines += [
        "",
        "pxed RSS between phases (MB): "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r["rss_milestones_mb"].items())
        + ".",
        "",
        "CPU percentages are of one core over the transfer. For pxed, *main* is the "
        "reactor thread and *other* the writer/hash and pool threads; for nginx the "
        "server column is master + worker. The client is the download client, curl "
        "for uploads, or dd.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gib", type=float, default=2.0, help="transfer size [2]")
    p.add_argument("--runs", type=int, default=5, help="timed runs per measurement [5]")
    p.add_argument("--out", default=str(BENCH / "results"), help="results dir [bench/results]")
    p.add_argument(
        "--work",
        default=str(BENCH / ".work"),
        help="scratch dir; must be on the filesystem under test, not tmpfs [bench/.work]",
    )
    p.add_argument(
        "--client",
        choices=sorted(DOWNLOAD_CLIENTS),
        default="python",
        help="download client: bench/httpget.py (1 MiB reads) or curl (16 KiB reads) [python]",
    )
    p.add_argument(
        "--ref",
        help="run pxed from this commit (a git archive snapshot in the work dir) "
        "instead of the working tree",
    )
    p.add_argument(
        "--phases",
        type=lambda v: v.split(","),
        default=list(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} [all]",
    )
    p.add_argument(
        "--pxed-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the pxed process (repeatable), to try a tuning",
    )
    p.add_argument("--keep-work", action="store_true", help="keep logs and configs afterwards")
    args = p.parse_args(argv)
    if args.runs < 1 or args.size_gib <= 0:
        p.error("--runs and --size-gib must be positive")
    if not args.phases or set(args.phases) - set(PHASES):
        p.error(f"--phases: choose from {','.join(PHASES)}")
    if any("=" not in e for e in args.pxed_env):
        p.error("--pxed-env: KEY=VALUE")

    # SIGTERM (a timeout from outside) cleans up like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args)
    done = False
    try:
        result = bench.run()
        done = True
    except BenchError as e:
        log(f"error: {e}")
        return 1
    finally:
        # The large files always go; logs stay when something went wrong.
        bench.cleanup(keep_logs=not done)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "latest.md").write_text(markdown(result))
    log(f"wrote {out / 'latest.json'} and {out / 'latest.md'}")
    print()
    print(markdown(result))
    return 0 if all(t["pass"] for t in result["targets"].values()) else 2


if __name__ == "__main__":
    sys.exit(main())
