"""Boot latency while an upload commits: how long ``GET /v1/boot/{mac}``
takes to answer while a large upload is received and then committed (pxed
finishes hashing, fsyncs the file, renames it and records the version).

With SQLite's one database thread, a commit that does its file work on that
thread makes every query wait behind it (fsync, rename, directory fsync);
the boot answer makes several queries (the machine, its work, a credential
and an event, the last two written).  This phase measures it in one run on
two servers: *before* (``--boot-before``, a commit, run from a snapshot) and
*after* (the working tree, or ``--ref``), each with its own data dir and
``--boot-policy always``, so that every answer is the full management-OS
answer.  Both are started, each gets a machine (``POST /machine``) and an
untimed upload, then the timed runs alternate between them (before, after,
after, before, ...) so that drift on a noisy machine is shared; the server
not being measured is idle.

Each run primes the page cache like the upload phase, starts a poller (one
keep-alive connection, one request every ``--boot-interval-ms``), waits a
second (the run's *idle* figures), uploads the source file with sendfile,
and stops the poller shortly after the answer.  Latencies are reported for
the requests in flight at any moment of two windows: the whole upload
(request sent → answer) and the commit (last body byte sent → answer; a
request sent before the last body byte counts from that moment)."""

from __future__ import annotations

import shutil
import statistics
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
# The poller runs this long before the upload starts (the requests answered
# then are the run's "idle" figures) and after the upload's answer.
LEAD_SECONDS = 1.0
TAIL_SECONDS = 0.3
WINDOWS = ("idle", "upload", "commit")


def run(bench: Bench, after_source: Path, after_label: str) -> dict:
    args = bench.args
    interval = args.boot_interval_ms / 1000
    sources = {
        "before": (snapshot(args.boot_before, bench.work / "src-before"),
                   pxed_revision(args.boot_before)),
        "after": (after_source, after_label),
    }  # fmt: skip
    servers = {}
    for name, (source, label) in sources.items():
        log(f"boot: {name} = pxed {label}")
        servers[name] = start(bench, name, source)
    # Untimed: the first upload starts threads and fills fresh pages.
    for name, pxed in servers.items():
        log(f"boot {name}: warm-up upload (untimed)")
        bench.prime()
        image = pxed.create_image("bench-boot-warm-up")
        sendfile_upload(pxed, image, bench.src, bench.size, bench.timeout)
        pxed.delete_image(image)
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for i in range(bench.runs):
        # Both servers are up (the idle one costs nothing); they alternate
        # who goes first, so drift on a noisy machine is shared.
        for name in ("before", "after") if i % 2 == 0 else ("after", "before"):
            r = one_run(bench, servers[name], f"bench-boot-{i}", interval)
            runs[name].append(r)
            log(
                f"boot {name} {i + 1}/{bench.runs}: upload {r['upload_seconds']} s, "
                f"commit {r['commit_seconds']} s; during the commit: {r['commit']}"
            )
    for pxed in servers.values():
        pxed.stop()
    out: dict = {
        "request": f"GET {BOOT_PATH}",
        "boot_policy": "always",
        "interval_ms": args.boot_interval_ms,
        "size_bytes": bench.size,
        "size_gib": args.size_gib,
        "runs": bench.runs,
        "servers": {
            name: {"pxed": sources[name][1], **pool(runs[name], interval)} for name in servers
        },
    }
    before, after = (out["servers"][n] for n in ("before", "after"))
    if before["commit"].get("count") and after["commit"].get("count"):
        out["commit_p99_after_over_before"] = round(
            after["commit"]["p99_ms"] / before["commit"]["p99_ms"], 3
        )
        out["commit_worst_median_after_over_before"] = round(
            after["commit_worst_median_ms"] / before["commit_worst_median_ms"], 3
        )
    return out


def start(bench: Bench, name: str, source: Path) -> Pxed:
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
    return pxed


def one_run(bench: Bench, pxed: Pxed, image_name: str, interval: float) -> dict:
    bench.prime()
    image = pxed.create_image(image_name)
    limit = bench.timeout + LEAD_SECONDS + TAIL_SECONDS + 30
    poller = Poller(pxed.port, BOOT_PATH, interval, limit, int(limit / interval) + 1000)
    poller.start()
    try:
        time.sleep(LEAD_SECONDS)
        up = sendfile_upload(pxed, image, bench.src, bench.size, bench.timeout)
        time.sleep(TAIL_SECONDS)
    finally:
        poller.stop()
    check_poller(poller)
    answer = up["answer"]
    if answer.get("Size") != bench.size or answer.get("Sha256") != bench.sha256:
        raise BenchError(f"upload: pxed recorded {answer}, expected sha256 {bench.sha256}")
    pxed.delete_image(image)
    return windows(poller.samples, up, bench.size, interval)


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


def windows(samples: list, up: dict, size: int, interval: float) -> dict:
    """The requests in flight during each window (sent before its end and
    answered after its start; idle: answered before the upload started) and
    their latencies (commit: from the later of sending and the window's
    start), and every sample relative to the upload's start for the JSON."""
    t0, sent, answered = up["started"], up["body_sent"], up["answered"]
    bounds = {"idle": (-1e9, t0), "upload": (t0, answered), "commit": (sent, answered)}
    out: dict = {
        "upload_seconds": round(answered - t0, 3),
        "body_seconds": round(sent - t0, 3),
        "commit_seconds": round(answered - sent, 3),
        "upload_gbps": round(gbps(size, answered - t0), 3),
    }
    for window, (start, end) in bounds.items():
        if window == "idle":
            lats = [ms(s) for s in samples if s[1] < end]
        elif window == "upload":
            lats = [ms(s) for s in samples if s[0] < end and s[1] > start]
        else:
            # The wait inside the commit: a request sent before the last body
            # byte counts from then on, so that what the body transfer cost it
            # (disk and CPU contention) is not laid at the commit's door.
            inside = [s for s in samples if s[0] < end and s[1] > start]
            lats = [(s[1] - max(s[0], start)) * 1000 for s in inside]
        out[window] = latency_stats(lats, interval * 1000)
        out[f"{window}_latencies_ms"] = lats
    # Every request: when it was sent (seconds from the upload's start), and
    # its latency.
    out["samples"] = {
        "sent_s": [round(s[0] - t0, 4) for s in samples],
        "latency_ms": [round(ms(s), 2) for s in samples],
    }
    return out


def pool(runs: list[dict], interval: float) -> dict:
    """One server's figures: each window's requests of all runs together
    (the commit window of one run alone holds few requests when the commit
    stalls them), the per-run figures, and the per-run samples."""
    out: dict = {}
    for window in WINDOWS:
        pooled = [lat for r in runs for lat in r[f"{window}_latencies_ms"]]
        out[window] = latency_stats(pooled, interval * 1000)
    for r in runs:
        for window in WINDOWS:
            del r[f"{window}_latencies_ms"]  # in "samples" already
    # Robust to one noisy run: the worst answer of each run's commit window,
    # median over the runs.
    worst = [r["commit"]["max_ms"] for r in runs if r["commit"]["count"]]
    out["commit_worst_per_run_ms"] = worst
    out["commit_worst_median_ms"] = round(statistics.median(worst), 2) if worst else None
    for key in ("upload_seconds", "commit_seconds"):
        out[key] = [r[key] for r in runs]
    out["runs"] = runs
    return out
