"""Benchmark: time from POST /image/{uuid}/docker to a committed version, for
a small Dockerfile, split into build, export and disk assembly (the build's
own Timings).  A measurement, not a test.

    python bench/build.py [--runs 3] [--out bench/results]

Uses $DOCKER_HOST or the local engine, else starts dockerd (root, Debian's
docker.io) as the tests do (pxed/testing/dockerd.py); pxed runs as `twistd -n pxed` on loopback."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pxed.testing.dockerd import (  # noqa: E402
    NoEngine,
    find_or_start_engine,
    import_base_image,
    stop_engine,
)

DOCKERFILE = (
    "FROM pxed-test-busybox:latest\n"
    "RUN mkdir -p /opt/app && echo hello > /opt/app/greeting\n"
    "RUN dd if=/dev/zero of=/opt/app/blob bs=1M count=8 2>/dev/null\n"
)


def call(
    url: str,
    token: str,
    method: str = "GET",
    body: bytes | None = None,
    ctype: str = "application/json",
) -> dict:
    req = urllib.request.Request(  # noqa: S310 (loopback, http only)
        url,
        data=body,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": ctype},
    )
    with urllib.request.urlopen(req, timeout=600) as r:  # noqa: S310 (loopback)
        return json.loads(r.read())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args()
    work = ROOT / "bench" / ".work" / "build"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    try:
        host, dockerd = find_or_start_engine()
    except NoEngine as e:
        print(f"build benchmark: {e}", file=sys.stderr)
        return 1
    import_base_image(host, work)
    port = 18700 + os.getpid() % 1000
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("twistd")),
            "-n",
            "--pidfile=",
            "pxed",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--data-dir",
            str(work / "data"),
        ],
        cwd=work,
        env={**os.environ, "DOCKER_HOST": host},
        stdout=open(work / "pxed.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)  # noqa: S310
                break
            except OSError:
                time.sleep(0.2)
        token = (work / "data" / "admin.token").read_text().strip()
        image = call(
            base + "/image",
            token,
            "POST",
            json.dumps({"Name": "bench-build", "Size": 1 << 20}).encode(),
        )
        runs = []
        for _ in range(args.runs):
            started = time.monotonic()
            build = call(
                f"{base}/image/{image['UUID']}/docker",
                token,
                "POST",
                DOCKERFILE.encode(),
                "text/plain",
            )
            while build["State"] in ("queued", "running"):
                time.sleep(0.1)
                build = call(f"{base}/build/{build['ID']}", token)
            total = time.monotonic() - started
            if build["State"] != "succeeded":
                print(f"build failed: {build['Message']}", file=sys.stderr)
                return 1
            runs.append({"total": total, **build["Timings"]})
            print(f"run: {runs[-1]}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        stop_engine(dockerd)
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    machine = {
        "cpus": os.cpu_count(),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in open("/proc/cpuinfo")
                if line.startswith("model name")
            ),
            "?",
        ),
        "kernel": platform.release(),
        "docker_host": host,
        "storage_driver": "as configured on the engine (tests start it with vfs)",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "build.json").write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": machine,
                "dockerfile": DOCKERFILE,
                "runs": runs,
                "median": median,
            },
            indent=2,
        )
        + "\n"
    )
    lines = [
        "# pxed build benchmark",
        "",
        f"- Date: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
        f"- Machine: {machine['cpus']} × {machine['cpu']}, kernel {machine['kernel']}",
        f"- Engine: {host}",
        "- Dockerfile:",
        "",
        "```",
        DOCKERFILE.rstrip(),
        "```",
        "",
        f"| seconds (median of {len(runs)}) | POST → version | build | export | assemble (disk) |",
        "|---|---|---|---|---|",
        f"| | {median['total']:.2f} | {median['build']:.2f} | {median['export']:.2f}"
        f" | {median['assemble']:.2f} |",
        "",
        "The rest of POST → version is queueing, the log, the sha256 and the commit.",
    ]
    (out / "build.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
