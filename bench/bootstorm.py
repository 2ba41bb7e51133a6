"""Boot storms: pxed's boot answers under load, against references measured
in the same run.

    python -m bench.bootstorm            # about 8 minutes
    python -m bench.bootstorm --quick    # a smoke run, about 2 minutes

(cold) Cold start, as a lab powers a rack on right after queueing its work
    (issue 25): pxed is restarted (every cache of its boot answers empty),
    work is queued for ``--cold`` machines (100, then 500) by 8 clients at
    once, and within a second of the last queueing ``wrk -t1 -c200`` runs
    for ``--cold-seconds`` as in (a), with no warm-up; a run of the plain
    reference follows each.  Targets: pxed >= 0.6x the reference's
    requests/s, p99 <= 50 ms, 0 errors.

(a) Closed loop (warm): ``wrk -t1 -c200`` for ``--seconds`` against pxed with
    ``--machines`` registered MACs, ``--with-work`` of them with queued
    work, the requests alternating ``/v1/boot/{mac}`` and ``/ipxe/{mac}``
    over every MAC, ``--runs`` runs each (p99: the median run's, the
    worst run's beside it); the reference is a plain twisted.web resource
    (bench/plainweb.py) answering every request with a fixed JSON body of
    the size of pxed's answer to a machine with work.  Runs alternate
    between the two.  Targets: pxed >= 0.5x the reference's requests/s,
    p99 <= 50 ms, 0 errors (socket errors or 5xx).

(b) Storm: every machine gets work, then ``--machines`` simulated machines
    (bench/stormclient.py) each start the whole iPXE sequence
    (``/ipxe`` -> ``/ipxe/{mac}`` -> kernel -> initramfs) at a random
    moment within ``--spread`` seconds, each from its own loopback address;
    the reference is nginx serving the same sequence as static files
    (the two scripts as files, the same kernel and initramfs).  The first
    pxed storm is cold (every machine's credential is minted during it),
    the second warm.  Targets: pxed's aggregate bytes/s >= 0.8x nginx's,
    0 errors.

Needs wrk and nginx (Debian: apt-get install wrk nginx-light)."""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BENCH, BenchError, MiB, free_port, log
from bench.procs import Nginx, Pxed, pxed_revision
from bench.report import machine_info
from bench.stormclient import storm

TARGETS = {"rps_ratio": 0.5, "p99_ms": 50.0, "storm_ratio": 0.8, "cold_rps_ratio": 0.6}

WRK_SCRIPT = """\
local paths = {%(paths)s}
local i = 0
errors = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function request()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
function response(status, headers, body)
  if status >= 500 then errors = errors + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("errors") end
  io.write(string.format("5xx: %%d\\n", total))
end
"""

# The two iPXE scripts, as files.
NGINX_LOCATIONS = """\
        location = /ipxe { try_files /chain.ipxe =404; }
        location /ipxe/ { try_files /boot.ipxe =404; }
"""


def mac_of(i: int) -> str:
    return f"52:54:00:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"


def random_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n


class Process:
    """A reference server run as a child process."""

    def __init__(self, cmd: list[str], port: int, logfile: Path) -> None:
        self.port = port
        self._log = open(logfile, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        import socket

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{cmd[0]} exited with {self.proc.returncode}; see {logfile}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise BenchError(f"{cmd[0]} did not listen within 15 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def wrk(
    port: int, script: Path, seconds: float, connections: int, started: float | None = None
) -> dict:
    """One wrk run; *started*: the monotonic time it is measured from
    (``start_after_queue_s``), the last queueing's for a cold run."""
    cmd = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "5s",
        "-s", str(script), f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    gap = None if started is None else time.monotonic() - started
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        if found is None:
            raise BenchError(f"wrk said no {pattern!r}:\n{out}")
        return float(found.group(1))

    def millis(label: str) -> float:
        found = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if found is None:
            raise BenchError(f"wrk said no {label}% latency:\n{out}")
        value, unit = float(found.group(1)), found.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    socket_errors = 0
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if found:
        socket_errors = sum(int(g) for g in found.groups())
    result = {
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "p50_ms": millis("50"),
        "p99_ms": millis("99"),
        "errors": socket_errors + int(number(r"5xx: (\d+)")),
        "requests": int(number(r"(\d+) requests in")),
    }
    if gap is not None:
        result["start_after_queue_s"] = gap
    return result


def wrk_script(work: Path, macs: list[str]) -> Path:
    paths = []
    for mac in macs:
        paths += [f'"/v1/boot/{mac}"', f'"/ipxe/{mac}"']
    script = work / "paths.lua"
    script.write_text(WRK_SCRIPT % {"paths": ",".join(paths)})
    return script


class PlainWeb(Process):
    """The reference: bench/plainweb.py answering *body* to every GET."""

    def __init__(self, work: Path, body: bytes) -> None:
        body_file = work / "answer.json"
        body_file.write_bytes(body)
        port = free_port()
        cmd = [sys.executable, str(BENCH / "plainweb.py"), str(port), str(body_file)]
        super().__init__(cmd, port, work / "plainweb.log")


def logged(name: str, result: dict) -> dict:
    log(
        f"{name}: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.1f} ms,"
        f" p99 {result['p99_ms']:.1f} ms, {result['errors']} errors"
    )
    return result


def summary(rs: list[dict]) -> dict:
    return {
        "rps": statistics.median(r["rps"] for r in rs),
        "p50_ms": statistics.median(r["p50_ms"] for r in rs),
        # The median run's p99 (the target), and the worst run's.
        "p99_ms": statistics.median(r["p99_ms"] for r in rs),
        "p99_worst_ms": max(r["p99_ms"] for r in rs),
        "errors": sum(r["errors"] for r in rs),
        "runs": rs,
    }


def closed_loop(args, pxed: Pxed, plain: PlainWeb, script: Path) -> dict:
    log("closed loop: warming up both")
    wrk(pxed.port, script, 3, args.connections)
    wrk(plain.port, script, 3, args.connections)
    runs: dict[str, list[dict]] = {"pxed": [], "plain": []}
    order = ["plain", "pxed", "pxed", "plain"] * ((args.runs + 1) // 2)
    for name in order[: 2 * args.runs]:
        target = pxed.port if name == "pxed" else plain.port
        result = wrk(target, script, args.seconds, args.connections)
        runs[name].append(logged(f"closed loop {name}", result))
    pxed_s, plain_s = summary(runs["pxed"]), summary(runs["plain"])
    return {
        "pxed": pxed_s,
        "plain_twisted_web": plain_s,
        "rps_ratio": pxed_s["rps"] / plain_s["rps"],
    }


def spread(macs: list[str], count: int) -> list[str]:
    """*count* MACs spread evenly over *macs*."""
    step = len(macs) / count
    return [macs[int(i * step)] for i in range(count)]


def queue_burst(pxed: Pxed, macs: list[str], setup_uuid: str) -> list[tuple[str, int]]:
    """Work for each of *macs*, queued by 8 clients at once: (MAC, work id)."""

    def one(mac: str) -> tuple[str, int]:
        status, data = pxed.request("POST", f"/machine/{mac}/boot", {"SetupUUID": setup_uuid})
        if status != 200:
            raise BenchError(f"POST /machine/{mac}/boot: {status} {data[:200]!r}")
        return mac, json.loads(data)["ID"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, macs))


def cancel_all(pxed: Pxed, works: list[tuple[str, int]]) -> None:
    def one(work: tuple[str, int]) -> None:
        mac, work_id = work
        status, data = pxed.request("DELETE", f"/machine/{mac}/boot/queue/{work_id}")
        if status != 200:
            raise BenchError(f"DELETE queue entry {work_id}: {status} {data[:200]!r}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, works))


def profile(args, pxed: Pxed, name: str) -> subprocess.Popen | None:
    """With ``--profile``: py-spy sampling pxed (without pausing it) from
    now to the end of the cold run, its stacks collapsed into
    ``<work>/profile-<name>.txt`` (flame graph input: one stack a line)."""
    if not args.profile:
        return None
    if shutil.which("py-spy") is None:
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    out = args.work / f"profile-{name}.txt"
    seconds = int(args.cold_seconds + 5)
    cmd = ["py-spy", "record", "--nonblocking", "--format", "raw", "--rate", "200",
           "--duration", str(seconds), "--pid", str(pxed.pid), "-o", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the first queueing
    return proc


def cold_start(
    args, pxed: Pxed, plain: PlainWeb, script: Path, macs: list[str], setup_uuid: str
) -> dict:
    """For each size of ``--cold``: a restarted pxed, that many works queued
    in a burst, and wrk within a second of the last (then the reference)."""
    cases = {}
    for count in args.cold:
        runs: dict[str, list[dict]] = {"pxed": [], "plain": []}
        gaps = []
        for run in range(args.runs):
            # Every cache of the answers (the view, the rendered answers,
            # the answer log's last answers) starts empty, as after a boot.
            pxed.stop()
            pxed.start()
            log(f"cold {count}, run {run + 1}: queueing work for {count} machines")
            profiler = profile(args, pxed, f"cold-{count}-{run + 1}")
            t0 = time.monotonic()
            works = queue_burst(pxed, spread(macs, count), setup_uuid)
            queued = time.monotonic()
            result = wrk(pxed.port, script, args.cold_seconds, args.connections, started=queued)
            result["queue_s"] = queued - t0
            gaps.append(result["start_after_queue_s"])
            runs["pxed"].append(
                logged(
                    f"cold {count} pxed (queued in {queued - t0:.2f} s,"
                    f" wrk {result['start_after_queue_s']:.2f} s later)",
                    result,
                )
            )
            result = wrk(plain.port, script, args.cold_seconds, args.connections)
            if profiler is not None:
                profiler.wait(30)
            runs["plain"].append(logged(f"cold {count} plain", result))
            cancel_all(pxed, works)
        pxed_s, plain_s = summary(runs["pxed"]), summary(runs["plain"])
        cases[str(count)] = {
            "pxed": pxed_s,
            "plain_twisted_web": plain_s,
            "rps_ratio": pxed_s["rps"] / plain_s["rps"],
            "start_after_queue_max_s": max(gaps),
        }
    return cases


def nginx_tree(work: Path, static: Path, port: int, kernel: str, initrds: list[str]) -> Path:
    root = work / "nginx-root"
    if root.exists():
        shutil.rmtree(root)
    (root / "static").mkdir(parents=True)
    # The same files (hard links), at the same paths as pxed serves them.
    shutil.copytree(static, root / "static", copy_function=os.link, dirs_exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    (root / "chain.ipxe").write_text(f"#!ipxe\nchain --autofree {base}/ipxe/${{net0/mac}}\n")
    lines = ["#!ipxe", "echo nginx", f"kernel {base}/static/{kernel} initrd=initrd0 console=ttyS0"]
    lines += [f"initrd --name initrd{i} {base}/static/{p}" for i, p in enumerate(initrds)]
    (root / "boot.ipxe").write_text("\n".join([*lines, "boot"]) + "\n")
    return root


def run_storm(args, pxed: Pxed, work: Path, macs: list[str], static: Path) -> dict:
    port = free_port()
    root = nginx_tree(work, static, port, KERNEL, [INITRD])
    nginx = Nginx(work, root, 30, connections=4096, locations=NGINX_LOCATIONS, port=port)
    nginx.start()
    results: dict[str, dict] = {}
    try:
        for name in ("nginx", "pxed-cold", "nginx-2", "pxed-warm"):
            target = pxed.port if name.startswith("pxed") else port
            log(f"storm {name}: {len(macs)} machines within {args.spread:g} s")
            r = storm(target, macs, args.spread, timeout=args.storm_timeout)
            log(
                f"storm {name}: {r['finished']}/{r['machines']} finished in {r['seconds']:.1f} s,"
                f" {r['bytes_per_s'] / 1e9:.2f} GB/s, {r['errors']} errors {r['error_samples']}"
            )
            results[name] = r
    finally:
        nginx.stop()
    reference = statistics.median(results[n]["bytes_per_s"] for n in ("nginx", "nginx-2"))
    return {
        "runs": results,
        "nginx_bytes_per_s": reference,
        "cold_ratio": results["pxed-cold"]["bytes_per_s"] / reference,
        "warm_ratio": results["pxed-warm"]["bytes_per_s"] / reference,
        "errors": results["pxed-cold"]["errors"] + results["pxed-warm"]["errors"],
    }


KERNEL = "mgmtos/x86_64/vmlinuz"
INITRD = "mgmtos/x86_64/initramfs"


def closed_rows(label: str, found: dict) -> list[str]:
    rows = []
    for server, key in (("pxed", "pxed"), ("plain twisted.web, fixed answer", "plain_twisted_web")):
        s = found[key]
        rows.append(
            f"| {label} | {server} | {s['rps']:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f}"
            f" | {s['p99_worst_ms']:.1f} | {s['errors']} | {len(s['runs'])} |"
        )
    return rows


def report(result: dict, path: Path) -> None:
    m, a = result["machine"], result["args"]
    ok = result["pass"]
    lines = [
        "# Boot storm",
        "",
        f"pxed {result['pxed']}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())};"
        f" {m.get('nproc')} × {m.get('cpu_model')}, kernel {m.get('kernel')},"
        f" Python {m.get('python')}; load average {result['load_average']['start']} at the"
        f" start, {result['load_average']['end']} at the end."
        f"  `python -m bench.bootstorm {result['argv']}`",
        "",
        f"## Closed loop: wrk -t1 -c{a['connections']}, {a['machines']} MACs,"
        " /v1/boot/{mac} and /ipxe/{mac} alternating",
        "",
        "Cold: pxed restarted, then work queued for N machines in a burst (8 clients),"
        f" wrk started within a second of the last, {a['cold_seconds']:g} s, no warm-up;"
        " each run followed by one of the reference."
        f"  Warm: {a['with_work']:.0%} with work, answered before (3 s warm-up),"
        f" {a['seconds']:g} s runs.",
        "",
        "| case | server | req/s (median) | p50 ms | p99 ms (median run) | p99 ms (worst run)"
        " | errors | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdict = []
    for count, c in result.get("cold", {}).items():
        lines += closed_rows(f"cold, {count} queued", c)
        verdict.append(
            f"cold {count}: **{c['rps_ratio']:.2f}×**, p99 {c['pxed']['p99_ms']:.1f} ms"
            f" (wrk began at most {c['start_after_queue_max_s']:.2f} s after the last queueing)"
        )
    if "closed_loop" in result:
        cl = result["closed_loop"]
        lines += closed_rows("warm", cl)
        verdict.append(f"warm: **{cl['rps_ratio']:.2f}×**, p99 {cl['pxed']['p99_ms']:.1f} ms")
    lines += [
        "",
        "pxed / plain: " + "; ".join(verdict) + "."
        f"  Targets: cold ≥ {TARGETS['cold_rps_ratio']}×, warm ≥ {TARGETS['rps_ratio']}×,"
        f" p99 ≤ {TARGETS['p99_ms']:g} ms, 0 errors; answer {result['answer_bytes']} bytes.",
        "",
    ]
    cold_runs = [
        f"{count}: "
        + ", ".join(
            f"{r['rps']:.0f} req/s p99 {r['p99_ms']:.1f} ms (queued in {r['queue_s']:.1f} s)"
            for r in c["pxed"]["runs"]
        )
        for count, c in result.get("cold", {}).items()
    ]
    if cold_runs:
        lines += ["Every cold run of pxed: " + "; ".join(cold_runs) + ".", ""]
    if "storm" in result:
        st = result["storm"]
        lines += [
            f"## Storm: {a['machines']} machines within {a['spread']:g} s,"
            f" /ipxe → /ipxe/{{mac}} → kernel ({a['kernel_mib']} MiB)"
            f" → initramfs ({a['initrd_mib']} MiB)",
            "",
            "| run | finished | errors | seconds to the last | GB/s | boot p50 s | boot max s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in st["runs"].items():
            p50 = r["boot_p50_s"] if r["boot_p50_s"] is not None else float("nan")
            bmax = r["boot_max_s"] if r["boot_max_s"] is not None else float("nan")
            lines.append(
                f"| {name} | {r['finished']}/{r['machines']} | {r['errors']} | {r['seconds']:.1f}"
                f" | {r['bytes_per_s'] / 1e9:.2f} | {p50:.2f} | {bmax:.2f} |"
            )
        lines += [
            "",
            f"pxed / nginx: cold **{st['cold_ratio']:.2f}×**, warm {st['warm_ratio']:.2f}×"
            f" (target ≥ {TARGETS['storm_ratio']}); errors {st['errors']}.",
            "",
        ]
    lines += [
        "All targets: **{}** ({}).".format(
            "PASS" if ok else "FAIL",
            ", ".join(f"{k} {'pass' if v else 'FAIL'}" for k, v in result["verdicts"].items()),
        ),
        "",
    ]
    path.write_text("\n".join(lines))


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def sizes(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n]


CASES = ("cold", "warm", "storm")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--machines", type=int, default=1000)
    p.add_argument("--with-work", type=float, default=0.1)
    p.add_argument("--connections", type=int, default=200)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cold", type=sizes, default=[100, 500], help="works queued, e.g. 100,500")
    p.add_argument("--cold-seconds", type=float, default=10)
    p.add_argument("--cases", default=",".join(CASES), help="of cold,warm,storm")
    p.add_argument("--profile", action="store_true", help="py-spy pxed in the cold runs")
    p.add_argument("--spread", type=float, default=10)
    p.add_argument("--storm-timeout", type=float, default=180)
    p.add_argument("--kernel-mib", type=int, default=8)
    p.add_argument("--initrd-mib", type=int, default=24)
    p.add_argument("--quick", action="store_true", help="200 machines, 5 s runs, one run each")
    p.add_argument("--work", type=Path, default=BENCH / ".work" / "bootstorm")
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args()
    if args.quick:
        args.machines, args.seconds, args.runs, args.spread = 200, 5, 1, 3
        args.cold_seconds = 5
        args.cold = [n for n in args.cold if n <= args.machines]
    cases = [c for c in args.cases.split(",") if c]
    if set(cases) - set(CASES):
        raise BenchError(f"--cases: of {','.join(CASES)}")
    for tool in ("wrk",):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (Debian: apt-get install {tool})")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    work = args.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    static = work / "static"
    random_file(static / KERNEL, args.kernel_mib * MiB)
    random_file(static / INITRD, args.initrd_mib * MiB)
    config = work / "pxed.toml"
    config.write_text(
        f'static_dir = "{static}"\n'
        # wrk's 200 connections all come from 127.0.0.1.
        "max_connections_per_client = 4096\n"
        "[mgmtos.x86_64]\n"
        f'kernel = "{KERNEL}"\ninitrd = ["{INITRD}"]\ncmdline = "console=ttyS0"\n'
    )
    loads = {"start": load_average()}
    pxed = Pxed(work, 60, options=["--config", str(config)])
    pxed.start()
    plain = None
    result: dict = {}
    try:
        macs = [mac_of(i) for i in range(args.machines)]
        log(f"registering {len(macs)} machines")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: pxed.create_machine(macs[i], f"node{i:04d}"), range(len(macs))))
        log("registered")
        image = pxed.create_image("storm")
        status, data = pxed.request(
            "POST", "/user/admin/image_setup", {"Name": "storm", "Images": [{"UUID": image}]}
        )
        if status != 201:
            raise BenchError(f"POST image_setup: {status} {data[:200]!r}")
        setup = json.loads(data)["UUID"]
        # The reference answers what pxed answers a machine with work.
        probe = queue_burst(pxed, macs[:1], setup)
        status, body = pxed.request("GET", f"/v1/boot/{macs[0]}", auth=False)
        if status != 200:
            raise BenchError(f"GET /v1/boot: {status} {body[:200]!r}")
        cancel_all(pxed, probe)
        result["answer_bytes"] = len(body)
        plain = PlainWeb(work, body)
        script = wrk_script(work, macs)
        log("the reference: warming up")
        wrk(plain.port, script, 3, args.connections)
        if "cold" in cases:
            result["cold"] = cold_start(args, pxed, plain, script, macs, setup)
        with_work = spread(macs, max(1, int(len(macs) * args.with_work)))
        if "warm" in cases or "storm" in cases:
            queue_burst(pxed, with_work, setup)
        if "warm" in cases:
            result["closed_loop"] = closed_loop(args, pxed, plain, script)
        plain.stop()
        plain = None
        if "storm" in cases:
            queue_burst(pxed, [m for m in macs if m not in set(with_work)], setup)
            result["storm"] = run_storm(args, pxed, work, macs, static)
    finally:
        if plain is not None:
            plain.stop()
        pxed.stop()
    loads["end"] = load_average()
    verdicts = {}
    if "cold" in result:
        verdicts["cold"] = all(
            c["rps_ratio"] >= TARGETS["cold_rps_ratio"]
            and c["pxed"]["p99_ms"] <= TARGETS["p99_ms"]
            and c["pxed"]["errors"] == 0
            for c in result["cold"].values()
        )
    if "closed_loop" in result:
        closed = result["closed_loop"]
        verdicts["warm"] = (
            closed["rps_ratio"] >= TARGETS["rps_ratio"]
            and closed["pxed"]["p99_ms"] <= TARGETS["p99_ms"]
            and closed["pxed"]["errors"] == 0
        )
    if "storm" in result:
        stormed = result["storm"]
        verdicts["storm"] = (
            stormed["cold_ratio"] >= TARGETS["storm_ratio"] and stormed["errors"] == 0
        )
    ok = all(verdicts.values())
    result = {
        "pxed": pxed_revision(None),
        "machine": machine_info(work),
        "load_average": loads,
        "argv": " ".join(sys.argv[1:]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        **result,
        "targets": TARGETS,
        "verdicts": verdicts,
        "pass": ok,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bootstorm.json").write_text(json.dumps(result, indent=2) + "\n")
    report(result, args.out / "bootstorm.md")
    log(f"written {args.out / 'bootstorm.md'}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
