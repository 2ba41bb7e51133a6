"""Streaming files to and from pxed: a progress bar showing bytes, rate and
ETA, and sha256 over files read in chunks (never whole into memory)."""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

CHUNK = 1 << 20


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


class Progress:
    """A one-line bar on *stream* (stderr), redrawn at most ten times a
    second; on a stream that is not a terminal only the final line is printed."""

    def __init__(self, label: str, total: int, stream: IO[str] | None = None, done: int = 0):
        self.label, self.total, self.done = label, total, done
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start, self.start_done = time.monotonic(), done
        self.drawn = 0.0

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = (self.done - self.start_done) / elapsed
        percent = 100 * self.done // self.total if self.total else 100
        filled = 30 * percent // 100
        eta = (self.total - self.done) / rate if rate > 0 else 0
        return (
            f"{self.label} [{'#' * filled}{'-' * (30 - filled)}] {percent:3d}% "
            f"{human(self.done)}/{human(self.total)} {human(rate)}/s ETA {eta:.0f}s"
        )

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and (now - self.drawn >= 0.1 or self.done >= self.total):
            self.drawn = now
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()

    def finish(self) -> None:
        self.stream.write(("\r" if self.tty else "") + self.line() + "\n")
        self.stream.flush()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def chunks(path: Path, progress: Progress) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            progress.update(len(chunk))
            yield chunk
