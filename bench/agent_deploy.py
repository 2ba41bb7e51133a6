"""Benchmark: the management OS agent (pxed/agent) deploying a zstd image
to a file, against ``curl -sf -H 'Authorization: Bearer …' URL | zstd -d >
file`` -- the same URL and machine credential, paired in the same run.  A
measurement, not a test.

    python bench/agent_deploy.py [--size-gib 1] [--runs 5] [--out bench/results]

The image is made of 1 MiB blocks, a realistic mix of random (30 %), zero
(40 %) and text (30 %) blocks, compressed with ``zstd -3 -T0`` and uploaded
as version 1 of a zstd image.  A machine gets it queued, and its BootInform
(with the machine credential) gives the URL both sides read.  The agent's
side is its deploy step as a whole process (``python -m
bench.agent_deploy --one``: interpreter start, imports, download, sha256,
decompression, writes and fsync, plus its progress reports to pxed); the
reference is the shell pipeline, which neither hashes nor fsyncs.  Before
each timed run the target is made anew (sparse, the image's size) and
``sync`` flushes what the run before left dirty, so no run pays for
another's writeback, after an untimed write of the same size (deleted
again: see ``fresh_target``); the order alternates (A B, B A, ...).  Target: the
agent's median time ≤ 1/0.9 of the reference's (≥ 0.9× its throughput).
Results: bench/results/agent_deploy.{json,md}."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    BENCH,
    BenchError,
    MiB,
    log,
    run_text,
)
from bench.procs import CpuMeter, Pxed  # noqa: E402
from bench.report import loadavg  # noqa: E402

MAC = "52:54:00:be:0c:01"
TARGET = 0.9
WORDS = (
    "the of and to in is for on that by with as from at this an be are it or was which "
    "kernel disk image boot pxed machine sector block write read error warning info debug "
    "systemd network interface address route service started stopped failed mounted "
    "0 1 2 3 4 5 6 7 8 9 10 42 100 1024 4096 65536 /usr/lib /var/log /etc /dev/vda"
).split()


def text_pool(size: int, seed: int = 1) -> bytes:
    """Log-like text: lines of words from a small vocabulary, with numbers."""
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    out = bytearray()
    while len(out) < size:
        words = rng.choices(WORDS, k=rng.randint(4, 14))
        stamp = f"{rng.randint(0, 99999):05d}.{rng.randint(0, 999999):06d}"
        out += f"[{stamp}] {' '.join(words)} id={rng.getrandbits(32):08x}\n".encode()
    return bytes(out[:size])


def make_image(path: Path, size: int) -> tuple[int, str]:
    """The raw image (never held in memory) piped into ``zstd -3 -T0``
    writing *path*; (raw size, sha256 of the raw image)."""
    pool = text_pool(32 * MiB)
    rng = random.Random(7)  # noqa: S311 (test data, not secrets)
    raw = hashlib.sha256()
    with open(path, "wb") as out:
        zstd = subprocess.Popen(
            ["zstd", "-q", "-3", "-T0", "-c"], stdin=subprocess.PIPE, stdout=out
        )
        assert zstd.stdin is not None
        zero = bytes(MiB)
        for i in range(size // MiB):
            kind = i % 10
            if kind < 3:
                block = os.urandom(MiB)
            elif kind < 7:
                block = zero
            else:
                start = rng.randrange(0, len(pool) - MiB)
                block = pool[start : start + MiB]
            raw.update(block)
            zstd.stdin.write(block)
        zstd.stdin.close()
        if zstd.wait() != 0:
            raise BenchError("zstd failed making the image")
    return size, raw.hexdigest()


def file_sha256(path: Path, limit: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = limit
        while left and (block := f.read(min(4 * MiB, left))):
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def queue_work(pxed: Pxed, image: str) -> tuple[str, dict]:
    """The machine credential and BootInform's entry for the image."""
    pxed.create_machine(MAC, "bench-agent")
    status, data = pxed.request(
        "POST", "/user/admin/image_setup", {"Name": "bench", "Images": [{"UUID": image}]}
    )
    if status != 201:
        raise BenchError(f"POST image_setup: {status} {data[:200]!r}")
    setup = json.loads(data)["UUID"]
    status, data = pxed.request("POST", f"/machine/{MAC}/boot", {"SetupUUID": setup})
    if status != 200:
        raise BenchError(f"POST /machine/{MAC}/boot: {status} {data[:200]!r}")
    status, data = pxed.request("GET", f"/v1/boot/{MAC}", auth=False)
    if status != 200:
        raise BenchError(f"GET /v1/boot: {status} {data[:200]!r}")
    token = json.loads(data)["cmdline"].split("pxed.token=")[1].split()[0]
    saved, pxed.token = pxed.token, token
    try:
        status, data = pxed.request("GET", f"/machine/{MAC}/boot")
    finally:
        pxed.token = saved
    if status != 200:
        raise BenchError(f"BootInform: {status} {data[:200]!r}")
    entry = json.loads(data)["Images"][0]
    return token, entry


def machine_info(work: Path) -> dict:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        "?",
    )
    df = run_text(["df", "-T", str(work)]).splitlines()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "work_dir_fs": df[-1].split()[1] if len(df) > 1 else "?",
        "curl": run_text(["curl", "--version"]).split(" ")[1:2],
        "zstd": run_text(["zstd", "--version"]),
    }


def fresh_target(path: Path, size: int) -> None:
    """The target made anew (sparse, *size*) after an untimed write of as
    many bytes, deleted again: on this VM filling page-cache pages not used
    lately is several times slower than reusing pages just freed
    (bench/README.md), so every timed run starts from the same state."""
    path.unlink(missing_ok=True)
    prime = path.with_name("prime")
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={prime}", "bs=1M", f"count={size // MiB}", "status=none"],
        check=True,
    )
    prime.unlink()
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["sync"], check=True)


def run_timed(cmd: list[str], env: dict, pxed: Pxed, timeout: float) -> tuple[float, dict, str]:
    with CpuMeter(pxed.pid) as meter:
        started = time.monotonic()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        seconds = time.monotonic() - started
    if done.returncode != 0:
        raise BenchError(
            f"{cmd[:4]}: exit {done.returncode}: {(done.stderr or done.stdout)[-800:]}"
        )
    return seconds, meter.result, done.stdout


def one(entry_file: Path, disk: Path) -> int:
    """The agent's deploy step alone, as the benchmark times it."""
    from pxed.agent.client import Client
    from pxed.agent.deploy import deploy
    from pxed.agent.facts import Disk, size_of
    from pxed.agent.wire import ImageEntry

    entry = ImageEntry.from_json(json.loads(entry_file.read_text()))
    base = (entry.url or "").split("/image/")[0]
    client = Client(base, os.environ["PXED_TOKEN"])
    done = deploy(client, MAC, entry, Disk(str(disk), disk.name, size_of(str(disk))))
    print(json.dumps({"written": done.written, "downloaded": done.downloaded,
                      "seconds": done.seconds}))  # fmt: skip
    return 0


def stats(values: list[float]) -> dict:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def markdown(r: dict) -> str:
    a, b = r["agent"]["seconds"], r["reference"]["seconds"]
    gib = r["raw_size"] / 2**30
    lines = [
        "# Agent deploy benchmark",
        "",
        f"{r['date']}, {r['machine']['nproc']} CPUs ({r['machine']['cpu_model']}), "
        f"kernel {r['machine']['kernel']}, work dir on {r['machine']['work_dir_fs']}; "
        f"load before {r['load_before']}.",
        "",
        f"A {gib:g} GiB image (30 % random, 40 % zero, 30 % text 1 MiB blocks), "
        f"{r['stored_size']:,} bytes as zstd -3; deployed to a file {r['runs']} times each, "
        "paired and alternating, after one untimed run each.",
        "",
        "| | min s | median s | max s | median GB/s (raw) | client CPU % | pxed CPU % |",
        "|---|---|---|---|---|---|---|",
        f"| agent (pxed.agent's deploy step as a process: sha256, zstd, fsync) | {a['min']} | "
        f"{a['median']} | {a['max']} | {r['agent']['gbps']} | "
        f"{r['agent']['client_cpu_pct']} | {r['agent']['server_cpu_pct']} |",
        f"| reference (`curl -sf -H … URL \\| zstd -d > file`) | {b['min']} | {b['median']} | "
        f"{b['max']} | {r['reference']['gbps']} | {r['reference']['client_cpu_pct']} | "
        f"{r['reference']['server_cpu_pct']} |",
        "",
        f"Throughput ratio agent / reference: median of the pairs {r['ratio']['median']} "
        f"(min {r['ratio']['min']}, max {r['ratio']['max']}); of the medians "
        f"{r['ratio_of_medians']}.  Target ≥ {TARGET}: **{'PASS' if r['pass'] else 'FAIL'}**.",
        "",
        "The agent does more than the reference: it hashes the stored bytes (sha256) and "
        "fsyncs the disk before it reports, and posts progress every 2 s.  Both outputs "
        "are checked (sha256 of the raw image) on the untimed runs.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-gib", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", type=Path, default=BENCH / "results")
    p.add_argument("--one", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(*args.one)
    for tool in ("curl", "zstd"):
        if shutil.which(tool) is None:
            print(f"agent_deploy: {tool} not found (apt-get install {tool})", file=sys.stderr)
            return 1
    work = BENCH / ".work" / "agent_deploy"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    size = int(args.size_gib * 1024) * MiB
    # No management OS build at this pxed's first start: the bench needs
    # only BootInform's credential, not a kernel.
    pxed = Pxed(work, timeout=120, env=["PXED_MGMTOS_BUILD=off"])
    try:
        pxed.start()
        status, data = pxed.request(
            "POST",
            "/image",
            {"Name": "bench-agent", "Size": MiB, "DiskCompressionStrategy": "zstd"},
        )
        if status != 201:
            raise BenchError(f"POST /image: {status} {data[:200]!r}")
        image = json.loads(data)["UUID"]
        source = work / "image.zst"
        log(f"making a {size / 2**30:g} GiB image, zstd -3")
        raw_size, raw_sha = make_image(source, size)
        stored = source.stat().st_size
        log(f"stored size {stored:,} bytes ({stored / raw_size:.1%} of the raw image); uploading")
        upload = subprocess.run(
            ["curl", "-sf", "-X", "POST", "-T", str(source), "-H", f"@{pxed.auth_file}",
             "-H", "Content-Type: application/octet-stream", "-H", "Accept: application/json",
             "-H", "Expect:", pxed.url(f"/image/{image}")],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if upload.returncode != 0:
            raise BenchError(f"upload: curl exit {upload.returncode}: {upload.stderr}")
        source.unlink()
        token, entry = queue_work(pxed, image)
        entry_file = work / "entry.json"
        entry_file.write_text(json.dumps(entry))
        url = entry["URL"]
        disk = work / "disk.img"
        env = {**os.environ, "PXED_TOKEN": token, "PYTHONPATH": str(ROOT)}
        header = work / "curl.header"
        fd = os.open(header, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"Authorization: Bearer {token}\n")
        commands = {
            "agent": [sys.executable, "-m", "bench.agent_deploy", "--one", str(entry_file),
                      str(disk)],
            # The header from a file: the credential stays off the process list.
            "reference": ["sh", "-c", f"curl -sf -H @{header} '{url}' | zstd -q -d > {disk}"],
        }  # fmt: skip
        timeout = max(300.0, size / 20e6)
        load_before = loadavg()
        for name in ("agent", "reference"):
            fresh_target(disk, raw_size)
            log(f"untimed {name} run")
            run_timed(commands[name], env, pxed, timeout)
            if (got := file_sha256(disk, raw_size)) != raw_sha:
                raise BenchError(f"{name}: the file's sha256 is {got}, the image's {raw_sha}")
        times: dict[str, list[float]] = {"agent": [], "reference": []}
        cpu: dict[str, list[dict]] = {"agent": [], "reference": []}
        for i in range(args.runs):
            order = ("agent", "reference") if i % 2 == 0 else ("reference", "agent")
            for name in order:
                fresh_target(disk, raw_size)
                seconds, meter, _ = run_timed(commands[name], env, pxed, timeout)
                times[name].append(seconds)
                cpu[name].append(meter)
                log(f"run {i + 1} {name}: {seconds:.2f} s ({raw_size / seconds / 1e9:.2f} GB/s)")
        ratios = [r / a for a, r in zip(times["agent"], times["reference"], strict=True)]
        result = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine_info(work),
            "load_before": load_before,
            "raw_size": raw_size,
            "stored_size": stored,
            "runs": args.runs,
            "commands": {
                "agent": "python -m bench.agent_deploy --one ENTRY DISK (pxed.agent.deploy)",
                "reference": "curl -sf -H 'Authorization: Bearer …' URL | zstd -d > DISK",
            },
            "ratio": stats(ratios),
            "ratio_of_medians": round(
                statistics.median(times["reference"]) / statistics.median(times["agent"]), 3
            ),
        }
        for name in ("agent", "reference"):
            result[name] = {
                "seconds": stats(times[name]),
                "all_seconds": [round(t, 3) for t in times[name]],
                "gbps": round(raw_size / statistics.median(times[name]) / 1e9, 2),
                "client_cpu_pct": statistics.median(c["client_cpu_pct"] for c in cpu[name]),
                "server_cpu_pct": statistics.median(c["server_cpu_pct"] for c in cpu[name]),
            }
        result["pass"] = result["ratio"]["median"] >= TARGET
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "agent_deploy.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "agent_deploy.md").write_text(markdown(result))
        log(f"ratio agent/reference (throughput): {result['ratio']}; pass={result['pass']}")
        return 0 if result["pass"] else 2
    except BenchError as e:
        log(f"agent_deploy: {e}")
        return 1
    finally:
        pxed.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
