"""The phases of a run and the Bench that runs them: download (pxed against
nginx), upload (pxed against dd), peak RSS (four concurrent uploads), and
boot latency during an upload's commit (bench/boot_latency.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import boot_latency
from bench.clients import (
    DOWNLOAD_CLIENTS,
    check_upload,
    curl_upload,
    dd_write,
    make_source,
    upload_cmd,
    warm,
)
from bench.common import MB, ROOT, BenchError, GiB, gbps, log, run_text
from bench.procs import CpuMeter, Nginx, Pxed, pxed_revision, snapshot
from bench.report import judge, loadavg, machine_info, median_cpu, summary

PHASES = ("download", "upload", "rss", "boot")
# The phases that share one pxed and report to latest.{json,md}; "boot" runs
# its own servers (before and after) and reports to boot_latency.{json,md}.
SERVER_PHASES = ("download", "upload", "rss")


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
        # More pxed servers a phase started (boot: before and after), so that
        # cleanup stops them whatever happens.
        self.servers: list[Pxed] = []

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
        result["pxed_env"] = self.args.pxed_env
        self.sha256 = make_source(self.src, self.size)
        phases = self.args.phases
        if any(p in SERVER_PHASES for p in phases):
            self.pxed = Pxed(self.work, timeout=60, source=source, env=self.args.pxed_env)
            self.pxed.start()
            self.milestone("after_start")
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
            result["targets"] = judge(result)
            # The boot phase runs its own servers, with nothing else up.
            self.pxed.stop()
        if "boot" in phases:
            result["boot"] = boot_latency.run(self, source, result["pxed"])
        result["loadavg_after"] = loadavg()
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

    def cleanup(self, keep_logs: bool) -> None:
        for proc in (self.nginx, self.pxed, *self.servers):
            if proc is not None:
                try:
                    proc.stop()
                except Exception as e:  # cleanup goes on whatever failed
                    log(f"cleanup: {e}")
        self.src.unlink(missing_ok=True)
        self.ddout.unlink(missing_ok=True)
        for server in (self.pxed, *self.servers):
            if server is not None:
                shutil.rmtree(server.data / "images", ignore_errors=True)
        if keep_logs or self.args.keep_work:
            log(f"logs and configs kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
