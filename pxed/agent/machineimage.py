"""The machine image step: download the machine's own small image, check
its sha256, record this boot in /pxed/ on it when it mounts (ext4 over a
loop device), and upload it back as a new version; if it cannot be
mounted it goes back unchanged, with a warning.  It is small, so it goes
to the work dir (RAM in the management OS), and only while it takes under
half the memory available."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pxed.agent import facts
from pxed.agent.client import Client, HTTPError
from pxed.agent.deploy import CHUNK
from pxed.agent.errors import Failed
from pxed.agent.wire import BootInform

HISTORY_LINES = 1000


@dataclass(frozen=True)
class BootRecord:
    work: BootInform
    kernel: str
    deployed: str
    captured: str

    def last_boot(self, now: str) -> str:
        return "".join(
            f"{k}={v}\n"
            for k, v in (
                ("work", self.work.id),
                ("setup", self.work.setup_uuid),
                ("setup_name", self.work.name),
                ("date", now),
                ("kernel", self.kernel),
                ("deployed", self.deployed),
                ("captured", self.captured),
            )
        )

    def history_line(self, now: str) -> str:
        line = f"{now} work={self.work.id} setup={self.work.setup_uuid} deployed: {self.deployed}"
        return line + (f"; captured: {self.captured}" if self.captured else "")


def update(
    client: Client,
    record: BootRecord,
    workdir: Path,
    info: Callable[[str], None],
    warning: Callable[[str], None],
) -> None:
    image = record.work.machine_image
    if image is None or not image.url or not image.upload_url:
        warning("BootInform names no machine image: not updated")
        return
    available = facts.memory_available()
    if image.size is not None and available and image.size > available // 2:
        warning(
            f"machine image ({image.size} bytes) too large for RAM "
            f"({available} bytes available): not updated"
        )
        return
    path = workdir / "machine.img"
    try:
        _download(client, image.url, path, image.sha256)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        error = _record(path, workdir / "mnt", record, now)
        if error is None:
            info("recorded this boot in the machine image (/pxed/last-boot, /pxed/history)")
        else:
            warning(f"cannot mount the machine image ({error}): uploading it unchanged")
        size = path.stat().st_size
        try:
            answer = client.upload(image.upload_url, _read(path), length=size)
        except HTTPError as e:
            raise Failed(f"uploading the machine image failed ({e})") from None
        except OSError as e:
            raise Failed(f"uploading the machine image failed: {e}") from None
        info(f"machine image uploaded: {answer.body[:200].decode('utf-8', 'replace')}")
    finally:
        path.unlink(missing_ok=True)


def _download(client: Client, url: str, path: Path, want: str | None) -> None:
    sha = hashlib.sha256()
    try:
        download = client.download(url, timeout=600)
    except (OSError, HTTPError) as e:
        raise Failed(f"downloading the machine image failed: {e}") from None
    try:
        with open(path, "wb") as f:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := download.readinto(view):
                sha.update(view[:n])
                f.write(view[:n])
    except OSError as e:
        raise Failed(f"downloading the machine image failed: {e}") from None
    finally:
        download.close()
    if not download.complete:
        raise Failed(
            f"downloading the machine image failed: the connection closed after "
            f"{download.received} of {download.length} bytes"
        )
    got = sha.hexdigest()
    if want and got != want.lower():
        raise Failed(f"machine image sha256 mismatch: got {got}, expected {want}")


def _run(*args: str) -> str | None:
    """None if the command worked, else what it said."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    if done.returncode == 0:
        return None
    return (done.stderr or done.stdout).strip()[:300] or f"exit status {done.returncode}"


def _record(path: Path, mnt: Path, record: BootRecord, now: str) -> str | None:
    """Write /pxed/last-boot and /pxed/history (newest first, at most 1000
    lines) on the image; None if done, else why it could not be mounted."""
    mnt.mkdir(parents=True, exist_ok=True)
    error = _run("mount", "-t", "ext4", "-o", "loop", str(path), str(mnt))
    if error is not None:
        return error
    try:
        pxed = mnt / "pxed"
        pxed.mkdir(exist_ok=True)
        (pxed / "last-boot").write_text(record.last_boot(now))
        history = pxed / "history"
        try:
            old = history.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            old = []
        lines = [record.history_line(now), *old][:HISTORY_LINES]
        history.write_text("\n".join(lines) + "\n")
        os.sync()
    finally:
        error = _run("umount", str(mnt))
        if error is not None:
            raise Failed(f"cannot unmount the machine image: {error}")
    return None


def _read(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while data := f.read(CHUNK):
            yield data
