"""What every part of the benchmark shares: paths, units, logging, errors."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MiB = 1024 * 1024
GiB = 1024 * MiB
GB = 1e9  # throughput is reported in GB/s (10^9 bytes per second)
MB = 1e6  # memory is reported in MB (10^6 bytes), the stricter reading of the target


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_text(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def gbps(size: int, seconds: float) -> float:
    return size / seconds / GB
