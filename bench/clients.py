"""The clients that load the servers: downloads (bench/httpget.py or curl),
uploads (curl, or a sendfile client that knows when the body has been sent),
``dd`` as the reference writer, the source file, and a keep-alive poller that
times small requests while something else runs."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import BENCH, BenchError, GiB, MiB, log

if TYPE_CHECKING:
    from bench.procs import Pxed


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


def sendfile_upload(pxed: Pxed, image_uuid: str, src: Path, size: int, timeout: float) -> dict:
    """``POST /image/{uuid}`` of *src* as a raw body sent with sendfile(2),
    noting when the request started, when the last body byte was handed to
    the kernel (pxed then has at most a socket buffer left to read: from here
    on it finishes hashing, fsyncs, renames and records the version) and when
    the answer arrived.  Times are ``time.monotonic()`` seconds."""
    head = (
        f"POST /image/{image_uuid} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{pxed.port}\r\n"
        f"Authorization: Bearer {pxed.token}\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Accept: application/json\r\n"
        f"Content-Length: {size}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", pxed.port), timeout=timeout)
    try:
        started = time.monotonic()
        sent_error = None
        try:
            sock.sendall(head)
            with open(src, "rb") as f:
                sent = sock.sendfile(f)
            if sent != size:
                raise BenchError(f"upload: sent {sent} of {size} bytes")
        except OSError as e:  # pxed answered early (an error) and closed
            sent_error = e
        body_sent = time.monotonic()
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()
        body = resp.read()
        answered = time.monotonic()
    finally:
        sock.close()
    if resp.status != 200 or sent_error is not None:
        raise BenchError(f"upload: status {resp.status} ({sent_error}): {body[:300]!r}")
    return {
        "started": started,
        "body_sent": body_sent,
        "answered": answered,
        "answer": json.loads(body),
    }


class Poller(threading.Thread):
    """GET *path* over one keep-alive connection, one request every
    *interval* seconds (or right after the previous answer when that took
    longer), until stopped or *limit* seconds or *max_requests* are reached.
    Each sample is (sent, answered, status) in ``time.monotonic()`` seconds.

    One connection, one request at a time, like pixiecore asking for one
    machine: a stall shows up as one long sample, not as many."""

    def __init__(
        self,
        port: int,
        path: str,
        interval: float,
        limit: float,
        max_requests: int,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name="bench-poller", daemon=True)
        self.port = port
        self.path = path
        self.interval = interval
        self.limit = limit
        self.max_requests = max_requests
        self.headers = {"Accept": "application/json", **(headers or {})}
        self.samples: list[tuple[float, float, int]] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(self.limit + 60)

    def run(self) -> None:
        end = time.monotonic() + self.limit
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.limit)
        try:
            while (
                not self._halt.is_set()
                and len(self.samples) < self.max_requests
                and len(self.errors) < 10
                and time.monotonic() < end
            ):
                sent = time.monotonic()
                try:
                    conn.request("GET", self.path, headers=self.headers)
                    resp = conn.getresponse()
                    resp.read()
                except (OSError, http.client.HTTPException) as e:
                    self.errors.append(f"{type(e).__name__}: {e}")
                    conn.close()  # the next request reconnects
                    continue
                self.samples.append((sent, time.monotonic(), resp.status))
                self._halt.wait(max(0.0, sent + self.interval - time.monotonic()))
        finally:
            conn.close()


# -- the source file -------------------------------------------------------------


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
