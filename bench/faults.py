"""Fault rounds against a real ``twistd -n pxed``: uploads killed with
kill -9 at random points, uploads into a full filesystem, uploads while
another process holds SQLite's write lock.  After every round pxed is
restarted and the data dir checked:

* every version row's file exists and matches the row's size and sha256;
* no orphan: every file under ``images/`` is named by a row (or is a
  build's Dockerfile beside such a file), every image directory has a row;
* ``images/.staging`` is empty once pxed has started.

::

    python bench/faults.py                      # 20 kill rounds, 4 disk-full, 4 busy
    python bench/faults.py --kill-rounds 4 --size-mib 4 --out /tmp/f.md   # quick

Loopback only; bounded (a fixed number of rounds, every wait has a
timeout).  The disk-full rounds mount a small tmpfs (needs root; they are
skipped otherwise, and the report says so).  Exit status: 0 no violation,
2 violations found, 1 the script itself failed.  Writes
``bench/results/faults.md``."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BENCH, ROOT, BenchError, MiB, free_port, log, run_text

LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


class Pxed:
    """``twistd -n pxed`` on a loopback port, with its data dir."""

    def __init__(self, data: Path, logfile: Path, source: Path = ROOT) -> None:
        self.source = source
        self.data = data
        self.logfile = logfile
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.token = ""

    def start(self, timeout: float = 30) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        script = Path(sys.executable).parent / "twistd"
        twistd = (
            [sys.executable, str(script)] if script.is_file() else [sys.executable, "-m", "twisted"]
        )
        args = ["-n", "--pidfile=", "pxed", "--port", f"tcp:{self.port}:interface=127.0.0.1",
                "--data-dir", str(self.data)]  # fmt: skip
        env = dict(os.environ)
        if self.source != ROOT:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.source), env.get("PYTHONPATH", "")) if p
            )
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                [*twistd, *args], cwd=self.source, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"pxed exited with {self.proc.returncode}; see {self.logfile}")
            try:
                status, _ = self.request("GET", "/healthz", timeout=2)
                if status:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise BenchError("pxed did not answer /healthz")
        self.token = (self.data / "admin.token").read_text().strip()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
        timeout: float = 60,
    ) -> tuple[int, bytes]:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            hdrs = dict(headers or {})
            if self.token:
                hdrs.setdefault("Authorization", f"Bearer {self.token}")
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def new_image(self) -> str:
        status, body = self.request(
            "POST", "/image", json.dumps({"Name": "faults", "Size": MiB}).encode(),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        if status != 201:
            raise BenchError(f"POST /image: {status} {body[:200]!r}")
        return json.loads(body)["UUID"]


def upload_headers(token: str, image: str, size: int, replace: bool) -> bytes:
    lines = [
        f"POST /image/{image} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {token}",
        "Content-Type: application/octet-stream",
        "Accept: application/json",
        f"Content-Length: {size}",
        "Connection: close",
    ]
    if replace:
        lines.append("X-BAAS-NewVersion: false")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_status(sock: socket.socket) -> int | None:
    """The status code of the answer on *sock*, None if there is none."""
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def send_upload(
    pxed: Pxed, image: str, payload: bytes, replace: bool, stop_after: int | None
) -> socket.socket:
    """Open a connection and send the upload's headers and the first
    *stop_after* bytes of *payload* (all of it if None)."""
    sock = socket.create_connection(("127.0.0.1", pxed.port), timeout=60)
    sock.sendall(upload_headers(pxed.token, image, len(payload), replace))
    end = len(payload) if stop_after is None else stop_after
    view = memoryview(payload)
    for start in range(0, end, 256 * 1024):
        sock.sendall(view[start : min(end, start + 256 * 1024)])
    return sock


def files_in(directory: Path) -> dict[str, tuple[int, int]]:
    """Name -> (inode, mtime) of the files in *directory*."""
    out = {}
    for entry in os.scandir(directory):
        with contextlib.suppress(OSError):
            st = entry.stat()
            out[entry.name] = (st.st_ino, st.st_mtime_ns)
    return out


@dataclass
class Check:
    versions: int = 0
    bad: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    staging: list[str] = field(default_factory=list)


class Checker:
    """The invariants, read from the database file and the data dir; file
    digests are cached by (inode, size, mtime, ctime), so a round hashes
    only what changed."""

    def __init__(self) -> None:
        self._digests: dict[tuple, str] = {}

    def _sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key not in self._digests:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(MiB):
                    h.update(chunk)
            self._digests[key] = h.hexdigest()
        return self._digests[key]

    def check(self, data: Path) -> Check:
        db = sqlite3.connect(f"file:{data / 'pxed.sqlite'}?mode=ro", uri=True, timeout=30)
        try:
            images = {u for (u,) in db.execute("SELECT uuid FROM images")}
            columns = {c[1] for c in db.execute("PRAGMA table_info(image_versions)")}
            # Before migration 0005 a version's file was always <version>.img.
            file = "file" if "file" in columns else "CAST(version AS TEXT) || '.img'"
            rows = db.execute(
                f"SELECT image_uuid, version, size, sha256, {file} FROM image_versions"  # noqa: S608
            ).fetchall()
        finally:
            db.close()
        result = Check(versions=len(rows))
        root = data / "images"
        named: set[tuple[str, str]] = set()
        for image, version, size, sha256, file in rows:
            named.add((image, file))
            path = root / image / file
            if not path.is_file():
                result.bad.append(f"{image}/{version}: {file} missing")
            elif path.stat().st_size != size or self._sha256(path) != sha256:
                result.bad.append(f"{image}/{version}: {file} does not match its sha256")
        for d in sorted(root.iterdir()):
            if d.name == ".staging":
                result.staging = sorted(p.name for p in d.iterdir())
                continue
            if d.is_dir() and d.name not in images:
                result.orphans.append(f"{d.name}/ (no image)")
                continue
            for f in sorted(d.iterdir()) if d.is_dir() else []:
                base = f.name.removesuffix(".Dockerfile") + (
                    ".img" if f.name.endswith(".Dockerfile") else ""
                )
                if (d.name, base) not in named:
                    result.orphans.append(f"{d.name}/{f.name}")
        return result


@dataclass
class Round:
    number: int
    kind: str
    detail: str
    answer: str
    check: Check | None = None
    left: int = 0


class Faults:
    def __init__(self, args: argparse.Namespace, source: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)  # noqa: S311 (fault timing, not secrets)
        self.work = Path(args.work).resolve()
        self.checker = Checker()
        self.rounds: list[Round] = []
        self.base = os.urandom(args.size_mib * MiB)
        self.notes: list[str] = []
        self.source = source.resolve()

    def payload(self, n: int) -> bytes:
        """Distinct bytes for each round (a different sha256)."""
        return n.to_bytes(8, "big") + self.base[8:]

    def restart_and_check(self, pxed: Pxed, r: Round) -> None:
        pxed.kill()
        # What the fault left before pxed's start cleans it (staging files,
        # files no row names): shows the rounds reach the windows that matter.
        left = self.checker.check(pxed.data)
        r.left = len(left.orphans) + len(left.staging)
        pxed.start()
        r.check = self.checker.check(pxed.data)
        c = r.check
        log(
            f"round {r.number} {r.kind} ({r.detail}): {r.answer}; versions {c.versions}, "
            f"left {r.left}, bad {len(c.bad)}, orphans {len(c.orphans)}, staging {len(c.staging)}"
        )
        self.rounds.append(r)

    # -- kill -9 ------------------------------------------------------------

    def kill_rounds(self, pxed: Pxed) -> None:
        image = pxed.new_image()
        size = len(self.base)
        for i in range(self.args.kill_rounds):
            n = len(self.rounds) + 1
            if i and i % 8 == 0:
                # Keep the data dir bounded: a fresh image every 8 rounds.
                pxed.request("DELETE", f"/image/{image}")
                image = pxed.new_image()
            replace = self.rng.random() < 0.5
            what = "replace" if replace else "new"
            where = ("body", "commit", "placed")[i % 3]
            payload = self.payload(n)
            directory = pxed.data / "images" / image
            before = files_in(directory)
            if where == "body":
                cut = self.rng.randrange(1, size)
                sock = send_upload(pxed, image, payload, replace, cut)
                time.sleep(self.rng.uniform(0, 0.05))
                pxed.kill()
                detail = f"{what}, killed after {cut} of {size} body bytes"
                answer = "killed"
            elif where == "commit":
                sock = send_upload(pxed, image, payload, replace, None)
                delay = self.rng.uniform(0, self.args.commit_window)
                sock.settimeout(max(delay, 0.001))
                status = None
                with contextlib.suppress(OSError):
                    status = read_status(sock)
                pxed.kill()
                detail = f"{what}, body sent, killed {delay * 1000:.0f} ms on"
                answer = f"{status} before the kill" if status else "killed"
            else:
                # The window between the file put in place and its row
                # committed: kill as soon as a new file shows in the image's
                # directory (polled; bounded by the upload's own time).
                sock = send_upload(pxed, image, payload, replace, None)
                deadline = time.monotonic() + 30
                seen = False
                while time.monotonic() < deadline and not seen:
                    seen = files_in(directory) != before
                    if not seen:
                        time.sleep(0.0005)
                pxed.kill()
                detail = f"{what}, killed as a file changed in the image's directory"
                answer = "killed" if seen else "no file appeared in 30 s"
            sock.close()
            self.restart_and_check(pxed, Round(n, "kill -9", detail, answer))

    # -- database busy --------------------------------------------------------

    def busy_rounds(self, pxed: Pxed) -> None:
        image = pxed.new_image()
        status, _ = pxed.request(
            "POST", f"/image/{image}", self.payload(0), {"Content-Type": "application/octet-stream"}
        )
        if status != 200:
            raise BenchError(f"first upload for the busy rounds: {status}")
        for i in range(self.args.busy_rounds):
            n = len(self.rounds) + 1
            replace = i % 2 == 0
            # Short holds end while pxed still waits for the lock; long ones
            # outlast its busy timeout, so the commit fails.
            hold = 1.0 if i % 4 in (1, 2) else self.args.busy_hold
            # The lock is taken while the body is still arriving, so it is
            # held when pxed commits the version.
            sock = send_upload(pxed, image, self.payload(n), replace, len(self.base) // 2)
            locker = subprocess.Popen(
                [sys.executable, "-c", LOCKER, str(pxed.data / "pxed.sqlite"), f"{hold:.2f}"],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                line = locker.stdout.readline().strip()
                if line != "locked":
                    raise BenchError("the locking process could not take the write lock")
                sock.sendall(self.payload(n)[len(self.base) // 2 :])
                status = read_status(sock)
                sock.close()
            finally:
                locker.wait(60)
            detail = f"{'replace' if replace else 'new'}, write lock held {hold:.1f} s"
            answer = str(status)
            self.restart_and_check(pxed, Round(n, "database busy", detail, answer))

    # -- disk full -------------------------------------------------------------

    def disk_rounds(self) -> None:
        mount = self.work / "tmpfs"
        mount.mkdir(parents=True, exist_ok=True)
        tmpfs_size = 3 * len(self.base) + 24 * MiB
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={tmpfs_size}", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            self.notes.append(f"disk-full rounds skipped: mount failed ({done.stderr.strip()})")
            return
        pxed = Pxed(mount / "data", self.work / "pxed-tmpfs.log", self.source)
        try:
            pxed.start()
            image = pxed.new_image()
            status, _ = pxed.request(
                "POST", f"/image/{image}", self.payload(0),
                {"Content-Type": "application/octet-stream"},
            )  # fmt: skip
            if status != 200:
                raise BenchError(f"first upload on the tmpfs: {status}")
            filler = mount / "filler"
            for i in range(self.args.disk_rounds):
                n = len(self.rounds) + 1
                replace = i % 2 == 1
                free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
                leave = self.rng.randrange(0, len(self.base))
                with open(filler, "wb") as f:
                    with contextlib.suppress(OSError):
                        f.write(b"\0" * max(0, free - leave))
                left = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
                status = None
                with contextlib.suppress(OSError, http.client.HTTPException):
                    status, _ = pxed.request(
                        "POST", f"/image/{image}", self.payload(n),
                        {"Content-Type": "application/octet-stream",
                         **({"X-BAAS-NewVersion": "false"} if replace else {})},
                    )  # fmt: skip
                filler.unlink()
                detail = (
                    f"{'replace' if replace else 'new'}, {left // 1024} KiB free "
                    f"for {len(self.base) // 1024} KiB"
                )
                self.restart_and_check(pxed, Round(n, "disk full", detail, str(status)))
        finally:
            pxed.kill()
            subprocess.run(["umount", str(mount)], check=False)

    # -- all ------------------------------------------------------------------

    def run(self) -> None:
        shutil.rmtree(self.work / "data", ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)
        pxed = Pxed(self.work / "data", self.work / "pxed.log", self.source)
        try:
            pxed.start()
            self.kill_rounds(pxed)
            self.busy_rounds(pxed)
        finally:
            pxed.kill()
        if self.args.disk_rounds:
            self.disk_rounds()

    def report(self) -> str:
        bad = sum(len(r.check.bad) for r in self.rounds if r.check)
        orphans = sum(len(r.check.orphans) for r in self.rounds if r.check)
        staging = sum(len(r.check.staging) for r in self.rounds if r.check)
        kinds: dict[str, int] = {}
        for r in self.rounds:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
        rev = run_text(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
        dirty = run_text(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
        out = [
            "# Fault rounds",
            "",
            f"`python bench/faults.py` (seed {self.args.seed}, {self.args.size_mib} MiB uploads) "
            f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, pxed at {rev}"
            f"{' (working tree with changes)' if dirty else ''}; `twistd -n pxed` on 127.0.0.1, "
            "restarted after every round.",
            "",
            "| rounds | " + " | ".join(kinds) + " |",
            "|---|" + "---|" * len(kinds),
            "| | " + " | ".join(str(v) for v in kinds.values()) + " |",
            "",
            f"**Versions whose file does not match their sha256: {bad}.  "
            f"Orphan files: {orphans}.  Files in staging after start: {staging}.**",
            "",
        ]
        out += [f"- {note}" for note in self.notes]
        if self.notes:
            out.append("")
        out += [
            "*left*: staging files and files no row names right after the fault, before"
            " the restart (pxed's start removes them); *bad*, *orphans*, *staging*: after"
            " the restart.",
            "",
            "| # | fault | what | answer | left | versions | bad | orphans | staging |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rounds:
            c = r.check or Check()
            out.append(
                f"| {r.number} | {r.kind} | {r.detail} | {r.answer} | {r.left} | {c.versions} | "
                f"{len(c.bad)} | {len(c.orphans)} | {len(c.staging)} |"
            )
        problems = [
            f"- round {r.number}: {p}"
            for r in self.rounds
            if r.check
            for p in r.check.bad + r.check.orphans + [f"staging: {s}" for s in r.check.staging]
        ]
        if problems:
            out += ["", "## Violations", "", *problems]
        return "\n".join(out) + "\n"

    def summary(self, label: str) -> str:
        """The same rounds against another tree, in short."""
        rev = run_text(["git", "-C", str(self.source), "rev-parse", "--short", "HEAD"])
        bad = [(r.number, p) for r in self.rounds if r.check for p in r.check.bad]
        orphans = [(r.number, p) for r in self.rounds if r.check for p in r.check.orphans]
        out = [
            "",
            f"## The same rounds against {rev or label} (`--before {label}`)",
            "",
            f"Versions whose file does not match their sha256 (summed over the checks): "
            f"{len(bad)}.  Orphan files (summed): {len(orphans)}.  (A violation that"
            " stays is counted again at every later check; a new image every 8 kill"
            " rounds drops those of the old one.)",
            "",
            "| # | fault | what | answer | bad | orphans |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rounds:
            c = r.check or Check()
            out.append(
                f"| {r.number} | {r.kind} | {r.detail} | {r.answer} | {len(c.bad)} | "
                f"{len(c.orphans)} |"
            )
        return "\n".join(out) + "\n"

    def violations(self) -> int:
        return sum(
            len(r.check.bad) + len(r.check.orphans) + len(r.check.staging)
            for r in self.rounds
            if r.check
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kill-rounds", type=int, default=20)
    p.add_argument("--busy-rounds", type=int, default=4)
    p.add_argument("--disk-rounds", type=int, default=4)
    p.add_argument("--size-mib", type=int, default=16)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--commit-window", type=float, default=0.4, help="seconds (kill after body)")
    p.add_argument("--busy-hold", type=float, default=8.0, help="long write-lock hold, s")
    p.add_argument("--source", default=str(ROOT), help="run pxed from this tree")
    p.add_argument(
        "--before",
        help="also run the same rounds (same seed) against pxed from this tree first,"
        " e.g. a worktree of the commit before a fix, and summarise them in the report",
    )
    p.add_argument("--work", default=str(BENCH / ".work" / "faults"))
    p.add_argument("--out", default=str(BENCH / "results" / "faults.md"))
    args = p.parse_args()
    before = None
    try:
        if args.before:
            before = Faults(args, Path(args.before))
            log(f"the same rounds against {args.before}")
            before.run()
            shutil.rmtree(before.work, ignore_errors=True)
        faults = Faults(args, Path(args.source))
        faults.run()
    except BenchError as e:
        log(f"failed: {e}")
        return 1
    report = faults.report()
    if before is not None:
        report += before.summary(args.before)
    Path(args.out).write_text(report)
    log(f"wrote {args.out}")
    shutil.rmtree(faults.work, ignore_errors=True)
    return 2 if faults.violations() else 0


if __name__ == "__main__":
    sys.exit(main())
