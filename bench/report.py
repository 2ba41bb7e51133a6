"""What a run reports: the machine, summaries of the timings, the targets and
their verdicts, and the markdown pages (``latest.md``, ``boot_latency.md``);
the JSON is the result dict as it is."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import subprocess
from pathlib import Path

from bench.common import gbps, run_text

TARGETS = {
    "download_ratio": (">=", 0.9, "pxed download / nginx (sendfile on)"),
    "upload_ratio": (">=", 0.6, "pxed upload / dd bs=1M conv=fdatasync"),
    "peak_rss_mb": ("<", 120.0, "pxed peak RSS, four concurrent uploads (MB)"),
}


# -- machine description ---------------------------------------------------------


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


# -- summaries -----------------------------------------------------------------


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


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p99 of 50 samples is the
    largest: no interpolation that would invent a value nobody saw)."""
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def latency_stats(latencies_ms: list[float], interval_ms: float) -> dict:
    """count, p50, p99, max and mean of request latencies, and the p99 with
    the requests a stall kept the poller from sending added back (each
    answer slower than the interval stands for the ones that would have been
    sent meanwhile, waiting L - interval, L - 2 × interval, ...: HdrHistogram's
    correction for coordinated omission)."""
    if not latencies_ms:
        return {"count": 0}
    ordered = sorted(latencies_ms)
    corrected = list(ordered)
    for lat in ordered:
        missed = lat - interval_ms
        while missed > interval_ms:
            corrected.append(missed)
            missed -= interval_ms
    corrected.sort()
    return {
        "count": len(ordered),
        "p50_ms": round(percentile(ordered, 50), 2),
        "p99_ms": round(percentile(ordered, 99), 2),
        "max_ms": round(ordered[-1], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "p99_corrected_ms": round(percentile(corrected, 99), 2),
    }


# -- report -------------------------------------------------------------------------


CLIENT_NAMES = {
    "python": "bench/httpget.py, 1 MiB recv_into, to nowhere",
    "curl": "curl -o /dev/null",
}


def markdown(r: dict) -> str:
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
        *machine_lines(r),
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
            f"Ratio pxed / nginx: **{d['ratio']}** (target ≥ {TARGETS['download_ratio'][1]}).",
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
            f"Ratio pxed / dd: **{u['ratio']}** (target ≥ {TARGETS['upload_ratio'][1]}).",
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


def machine_lines(r: dict) -> list[str]:
    m = r["machine"]
    return [
        f"- CPUs: {m['nproc']} × {m['cpu_model']}",
        f"- Memory: {m['memory_gib']} GiB",
        f"- Kernel: {m['kernel']}",
        f"- Work dir filesystem: {m['work_dir_fs']} ({m['work_dir_device']})",
        f"- Python {m['python']}, Twisted {m['twisted']}, nginx {m['nginx']}, curl {m['curl']}",
        f"- Load average (1, 5, 15 min) before: {r['loadavg_before']}, "
        f"after: {r['loadavg_after']} (other work on the machine skews the figures)",
    ]


def boot_markdown(r: dict) -> str:
    b = r["boot"]
    servers = b["servers"]

    def row(label: str, x: dict) -> str:
        if not x.get("count"):
            return f"| {label} | 0 | | | | |"
        return (
            f"| {label} | {x['count']} | {x['p50_ms']} | **{x['p99_ms']}** | {x['max_ms']} "
            f"| {x['p99_corrected_ms']} |"
        )

    lines = [
        "# pxed boot latency while an upload commits",
        "",
        f"- Date: {r['date']}",
        f"- Command: `{r['command']}`",
        f"- Request: `{b['request']}` for a registered managed machine, "
        f"`--boot-policy always` (the full management-OS answer), one keep-alive "
        f"connection, one request every {b['interval_ms']} ms or right after a slower answer",
        f"- Upload: {b['size_gib']} GiB (`POST /image/{{uuid}}`, raw body sent with "
        f"sendfile from the page cache), {b['runs']} timed runs per server after an "
        "untimed one, each after an untimed `dd` of the same size and `sync`; both "
        "servers up, runs alternating (before, after, after, before, ...)",
        "",
        "## Machine",
        "",
        *machine_lines(r),
        "",
        "## Latency of the boot answer (ms)",
        "",
        "Requests in flight at any moment of the window, all runs together. "
        "*Idle*: the second before each upload. *Whole upload*: request sent → "
        "answer. *Commit*: last body byte sent → answer (pxed finishes hashing, "
        "fsyncs, renames and records the version); a request already on its way "
        "then counts from that moment, so what the body transfer cost it is not "
        "laid at the commit's door.",
        "",
        "| server, window | requests | p50 | p99 | max | p99 corrected |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in servers.items():
        lines += [
            row(f"{name} (`{s['pxed']}`), idle", s["idle"]),
            row(f"{name}, whole upload", s["upload"]),
            row(f"{name}, commit", s["commit"]),
        ]
    lines += [
        "",
        "Per run (in run order):",
        "",
        "| server | upload s | of which commit s | upload GB/s | slowest commit answer, ms |",
        "|---|---|---|---|---|",
    ]

    def join(values) -> str:
        return ", ".join(map(str, values))

    for name, s in servers.items():
        lines.append(
            f"| {name} | {join(s['upload_seconds'])} | {join(s['commit_seconds'])} "
            f"| {join(r['upload_gbps'] for r in s['runs'])} "
            f"| {join(s['commit_worst_per_run_ms'])} (median **{s['commit_worst_median_ms']}**) |"
        )
    if "commit_p99_after_over_before" in b:
        lines += [
            "",
            "During the commit, after / before: p99 "
            f"**{b['commit_p99_after_over_before']}**, median of the runs' slowest answer "
            f"**{b['commit_worst_median_after_over_before']}** (below 1: after is faster).",
        ]
    lines += [
        "",
        "*p99 corrected* adds back the requests the poller could not send while "
        "it waited (each answer slower than the interval stands for the ones due "
        "meanwhile), so one long stall weighs as what it does to a client asking "
        "at that rate. Per-request samples are in `boot_latency.json`.",
        "",
    ]
    return "\n".join(lines)


def to_json(result: dict) -> str:
    """The result as indented JSON, with lists of numbers on one line (the
    boot phase's per-request samples would otherwise take a line each)."""
    text = json.dumps(result, indent=2)
    return (
        re.sub(
            r"\[\s+(-?[\d.e+-]+(?:,\s+-?[\d.e+-]+)*)\s+\]",
            lambda m: "[" + " ".join(m.group(1).split()) + "]",
            text,
        )
        + "\n"
    )
