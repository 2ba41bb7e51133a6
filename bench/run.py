#!/usr/bin/env python3
"""pxed throughput, memory and latency benchmark (a measurement, not a test).

Starts pxed for real (``twistd -n pxed``) on a loopback port with a data dir
under ``bench/.work/`` (the same filesystem as the repository, never /tmp),
and in the same run measures:

1. download: ``GET /image/{uuid}/1`` of a cached N GiB version, against nginx
   (sendfile on) serving the very same file;
2. upload: ``POST /image/{uuid}`` of an N GiB file (hashed, fsynced and
   renamed before pxed answers), against ``dd bs=1M conv=fdatasync`` to the
   same filesystem;
3. peak RSS of the pxed process during four concurrent N GiB uploads;
4. (only with ``--phases boot``) the latency of ``GET /v1/boot/{mac}`` while
   an N GiB upload commits, on pxed at ``--boot-before`` and on the working
   tree, one after the other.

Results go to ``bench/results/latest.{json,md}`` (phases 1-3) and
``bench/results/boot_latency.{json,md}`` (phase 4).  Usage::

    python bench/run.py [--size-gib 2] [--runs 5] [--out bench/results]
    python bench/run.py --phases boot [--runs 5]

Traffic goes to 127.0.0.1 only.  Every step has a timeout; pxed and nginx are
stopped and the large files removed whatever happens.  The parts:
bench/procs.py (the servers, CPU meters), bench/clients.py, bench/phases.py,
bench/boot_latency.py and bench/report.py.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

# Run as a script: the repository root makes the `bench` package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clients import DOWNLOAD_CLIENTS
from bench.common import BENCH, BenchError, log
from bench.phases import PHASES, SERVER_PHASES, Bench
from bench.report import boot_markdown, markdown, to_json

# The commit whose boot latency the working tree is compared with: the last
# one before the commit's file work moved off the database thread began.
BOOT_BEFORE = "3631c02"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--size-gib",
        type=float,
        help="transfer size [2; 1 when only the boot phase runs]",
    )
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
        default=list(SERVER_PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} [{','.join(SERVER_PHASES)}]",
    )
    p.add_argument(
        "--boot-before",
        default=BOOT_BEFORE,
        metavar="REF",
        help=f"boot phase: the commit measured as *before* [{BOOT_BEFORE}]",
    )
    p.add_argument(
        "--boot-interval-ms",
        type=float,
        default=5.0,
        help="boot phase: one boot request every this many ms [5]",
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
    if args.size_gib is None:
        args.size_gib = 1.0 if args.phases == ["boot"] else 2.0
    if args.runs < 1 or args.size_gib <= 0 or not 1 <= args.boot_interval_ms <= 1000:
        p.error("--runs and --size-gib must be positive, --boot-interval-ms 1 to 1000")
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
    status = 0
    if "boot" in result:
        (out / "boot_latency.json").write_text(to_json(result))
        (out / "boot_latency.md").write_text(boot_markdown(result))
        log(f"wrote {out / 'boot_latency.json'} and {out / 'boot_latency.md'}")
        print()
        print(boot_markdown(result))
        result = {k: v for k, v in result.items() if k != "boot"}
    if "targets" in result:
        (out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "latest.md").write_text(markdown(result))
        log(f"wrote {out / 'latest.json'} and {out / 'latest.md'}")
        print()
        print(markdown(result))
        status = 0 if all(t["pass"] for t in result["targets"].values()) else 2
    return status


if __name__ == "__main__":
    sys.exit(main())
