"""Boot latency while an upload commits: how long ``GET /v1/boot/{mac}``
takes to answer while a large upload is received and then committed (pxed
finishes hashing, fsyncs the file, renames it and records the version).

With SQLite's one database thread, a commit that does its file work on that
thread makes every query wait behind a multi-GiB fsync; the boot answer
makes several queries (the machine, its work, a credential, an event).  This
phase measures it on two servers one after another in the same run: *before*
(``--boot-before``, a commit, run from a snapshot) and *after* (the working
tree, or ``--ref``), each with its own data dir and ``--boot-policy always``
so that every answer is the full management-OS answer.

Per server: a machine is registered (``POST /machine``), the boot answer is
timed at rest (idle), then each run primes the page cache like the upload
phase, starts a poller (one keep-alive connection, one request every
``--boot-interval-ms``), uploads the source file with sendfile and stops
the poller shortly after the answer.  Latencies are reported for the
requests in flight at any moment of two windows: the whole upload (request
sent → answer), and the commit (last body byte sent → answer)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.clients import Poller, sendfile_upload
from bench.common import BenchError, gbps, log
from bench.procs import Pxed, pxed_revision, snapshot
from bench.report import latency_stats

if TYPE_CHECKING:
    from bench.phases import Bench

MAC = "52:54:00:be:4c:01"
BOOT_PATH = f"/v1/boot/{MAC}"
IDLE_SECONDS = 2.0
# The poller runs this long before the upload starts and after it answers.
MARGIN_SECONDS = 0.3
WINDOWS = ("upload", "commit")


def run(bench: Bench, after_source: Path, after_label: str) -> dict:
    args = bench.args
    interval = args.boot_interval_ms / 1000
    servers = [
        ("before", snapshot(args.boot_before, bench.work / "src-before"),
         pxed_revision(args.boot_before)),
        ("after", after_source, after_label),
    ]  # fmt: skip
    out: dict = {
        "request": f"GET {BOOT_PATH}",
        "boot_policy": "always",
        "interval_ms": args.boot_interval_ms,
        "size_bytes": bench.size,
        "size_gib": args.size_gib,
        "runs": bench.runs,
        "servers": {},
    }
    for name, source, label in servers:
        log(f"boot: {name} = pxed {label}")
        out["servers"][name] = {"pxed": label, **one_server(bench, name, source, interval)}
    before, after = (out["servers"][n]["commit"] for n in ("before", "after"))
    if before.get("count") and after.get("count"):
        out["commit_p99_after_over_before"] = round(after["p99_ms"] / before["p99_ms"], 3)
    return out


def one_server(bench: Bench, name: str, source: Path, interval: float) -> dict:
    work = bench.work / f"boot-{name}"
    shutil.rmtree(work, ignore_errors=True)  # a fresh database: one machine
    pxed = Pxed(
        work,
        timeout=60,
        source=source,
        env=bench.args.pxed_env,
        options=["--boot-policy", "always"],
    )
    bench.servers.append(pxed)
    pxed.start()
    pxed.create_machine(MAC, "bench-boot")
    status, body = pxed.request("GET", BOOT_PATH, auth=False)
    if status != 200 or b"kernel" not in body:
        raise BenchError(f"GET {BOOT_PATH}: {status} {body[:200]!r}")

    idle = Poller(pxed.port, BOOT_PATH, interval, IDLE_SECONDS + 30, 100_000)
    idle.start()
    time.sleep(IDLE_SECONDS)
    idle.stop()
    check_poller(idle)
    out: dict = {"idle": latency_stats([ms(s) for s in idle.samples], interval * 1000)}
    log(f"boot {name}: idle {out['idle']}")

    # Untimed: the first upload starts threads and fills fresh pages.
    log(f"boot {name}: warm-up upload (untimed)")
    bench.prime()
    image = pxed.create_image("bench-boot-warm-up")
    sendfile_upload(pxed, image, bench.src, bench.size, bench.timeout)
    pxed.delete_image(image)

    runs = []
    for i in range(bench.runs):
        bench.prime()
        image = pxed.create_image(f"bench-boot-{i}")
        limit = bench.timeout + 2 * MARGIN_SECONDS + 30
        poller = Poller(pxed.port, BOOT_PATH, interval, limit, int(limit / interval) + 1000)
        poller.start()
        try:
            time.sleep(MARGIN_SECONDS)
            up = sendfile_upload(pxed, image, bench.src, bench.size, bench.timeout)
            time.sleep(MARGIN_SECONDS)
        finally:
            poller.stop()
        check_poller(poller)
        answer = up["answer"]
        if answer.get("Size") != bench.size or answer.get("Sha256") != bench.sha256:
            raise BenchError(f"upload: pxed recorded {answer}, expected sha256 {bench.sha256}")
        pxed.delete_image(image)
        runs.append(one_run(poller.samples, up, bench.size, interval))
        r = runs[-1]
        log(
            f"boot {name} {i + 1}/{bench.runs}: upload {r['upload_seconds']} s "
            f"(commit {r['commit_seconds']} s): commit window {r['commit']}"
        )
    pxed.stop()
    for window in WINDOWS:
        # All runs' requests together: the p99 of a commit window alone
        # rests on few requests when the commit stalls them.
        pooled = [lat for r in runs for lat in r[f"{window}_latencies_ms"]]
        out[window] = latency_stats(pooled, interval * 1000)
    for r in runs:
        del r["upload_latencies_ms"]  # in "samples" already
    out["commit_seconds"] = [r["commit_seconds"] for r in runs]
    out["upload_seconds"] = [r["upload_seconds"] for r in runs]
    out["runs"] = runs
    return out


def ms(sample: tuple[float, float, int]) -> float:
    return (sample[1] - sample[0]) * 1000


def check_poller(poller: Poller) -> None:
    if poller.errors:
        raise BenchError(f"GET {BOOT_PATH}: {poller.errors[:3]}")
    bad = [s for s in poller.samples if s[2] != 200]
    if bad:
        raise BenchError(f"GET {BOOT_PATH}: {len(bad)} answers not 200, e.g. {bad[0][2]}")
    if not poller.samples:
        raise BenchError(f"GET {BOOT_PATH}: no answer")


def one_run(samples: list, up: dict, size: int, interval: float) -> dict:
    """The requests in flight during each window (sent before its end and
    answered after its start), and every sample relative to the upload's
    start for the JSON."""
    t0, sent, answered = up["started"], up["body_sent"], up["answered"]
    bounds = {"upload": (t0, answered), "commit": (sent, answered)}
    out: dict = {
        "upload_seconds": round(answered - t0, 3),
        "body_seconds": round(sent - t0, 3),
        "commit_seconds": round(answered - sent, 3),
        "upload_gbps": round(gbps(size, answered - t0), 3),
    }
    for window, (start, end) in bounds.items():
        lats = [ms(s) for s in samples if s[0] < end and s[1] > start]
        out[window] = latency_stats(lats, interval * 1000)
        out[f"{window}_latencies_ms"] = [round(x, 2) for x in lats]
    # (sent, latency) of every request, seconds from the upload's start.
    out["samples"] = [[round(s[0] - t0, 4), round(ms(s), 2)] for s in samples]
    return out
