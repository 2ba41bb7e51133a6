"""A Debian bookworm disk image with cloud-init, built from Debian packages
for tests/e2e/test_cloud_init.py: debootstrap (minbase, no recommends) from
deb.debian.org, the root filesystem tarred, and pxed's own disk builder
(pxed/builder/disk) making it a UEFI disk with systemd-boot.

debootstrap takes minutes, so the test run starts this module as a
subprocess when the session begins (the hook in tests/e2e/conftest.py) and
the test's fixture waits for it.  Run by hand::

    python -m tests.debianimage OUT_DIR

OUT_DIR ends up holding ``disk.img.zst`` (the image, zstd: its headroom is
zeros, and it crosses QEMU's emulated network small) and ``built.json``
(sizes and timings), written last: a directory with ``built.json`` is a
finished build.  Everything else made on the way is removed."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import zstandard

from pxed.builder.disk.bootdisk import make_disk

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
# The cloud kernel flavour: it has virtio, ext4 and the EFI stub and a
# fifth of linux-image-amd64's modules, which the image would carry through
# the emulated network for nothing.  python3-cffi-backend because
# debootstrap does not resolve the virtual package python3-cryptography
# needs (python3-cffi-backend-api-min).  cloud-init renders network-config
# for systemd-networkd (in the systemd package) when neither ifupdown nor
# netplan is installed; networkd matches the NIC by MAC as pxed's seed asks.
PACKAGES = [
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "udev",
    "cloud-init",
    "python3-cffi-backend",
    "openssh-server",
    "sudo",
    "e2fsprogs",
    "iproute2",
]
# The serial console last, so that systemd's messages reach it too.
CMDLINE = "console=tty0 console=ttyS0,115200 rw"
# cloud-init writes little before the test reads the disk; pxed grows the
# root to fill the disk anyway.
HEADROOM = 64 << 20
# Documentation, translations and the downloaded packages: not needed to boot.
PRUNED = [
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
]
BUILT = "built.json"


def _run(args: list[str], log) -> None:
    log.write(f"$ {' '.join(args)}\n")
    log.flush()
    subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, check=True)


def configure(rootfs: Path) -> None:
    """What a cloud image's build does after installing packages."""
    # Each machine makes its own on first boot (and networkd its DHCP
    # client id from it).
    (rootfs / "etc" / "machine-id").write_text("")
    for leftover in ("var/lib/dbus/machine-id",):
        (rootfs / leftover).unlink(missing_ok=True)
    wants = rootfs / "etc" / "systemd" / "system"
    (wants / "multi-user.target.wants").mkdir(parents=True, exist_ok=True)
    (wants / "network-online.target.wants").mkdir(parents=True, exist_ok=True)
    (wants / "sockets.target.wants").mkdir(parents=True, exist_ok=True)
    for unit, target in (
        ("systemd-networkd.service", "multi-user.target.wants"),
        ("systemd-networkd.socket", "sockets.target.wants"),
        ("systemd-networkd-wait-online.service", "network-online.target.wants"),
    ):
        link = wants / target / unit
        link.unlink(missing_ok=True)
        link.symlink_to(f"/lib/systemd/system/{unit}")
    # apt's timers would compete with the test for the emulated CPU.
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        (wants / "timers.target.wants" / timer).unlink(missing_ok=True)
    (rootfs / "etc" / "fstab").write_text("# root= on the kernel command line\n")
    for name in PRUNED:
        path = rootfs / name
        if path.is_dir():
            shutil.rmtree(path)
            path.mkdir()


def compress(source: Path, target: Path) -> None:
    """*source* as zstd in *target*, a chunk at a time (zstandard is one of
    pxed's own dependencies; the zstd tool may not be installed)."""
    cctx = zstandard.ZstdCompressor(level=3, threads=-1)
    with open(source, "rb") as src, open(target, "wb") as dst:
        cctx.copy_stream(src, dst, read_size=1 << 20, write_size=1 << 20)


def build(out: Path) -> dict:
    """The image in *out* (see the module's doc); its figures."""
    out.mkdir(parents=True, exist_ok=True)
    rootfs = out / "rootfs"
    tar = out / "rootfs.tar"
    disk = out / "disk.img"
    figures: dict = {"packages": PACKAGES}
    with open(out / "build.log", "a") as log:
        started = time.monotonic()
        if rootfs.exists():
            shutil.rmtree(rootfs)
        _run(
            [
                shutil.which("debootstrap") or "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(rootfs),
                MIRROR,
            ],
            log,
        )
        configure(rootfs)
        figures["debootstrap_seconds"] = round(time.monotonic() - started, 1)

        started = time.monotonic()
        # Numeric owners: the disk builder sets them as they are in the tree.
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tar), "."], log)
        shutil.rmtree(rootfs)
        figures["rootfs_tar_bytes"] = tar.stat().st_size

        def say(line: str) -> None:
            log.write(line + "\n")
            log.flush()

        layout = make_disk(tar, disk, out, cmdline=CMDLINE, headroom=HEADROOM, log=say)
        tar.unlink()
        figures["make_disk_seconds"] = round(time.monotonic() - started, 1)
        figures["image_bytes"] = layout.size
        if not layout.has_bootloader:
            raise SystemExit("the Debian root filesystem has no kernel the disk builder found")

        started = time.monotonic()
        compress(disk, Path(f"{disk}.zst"))
        disk.unlink()
        figures["zstd_seconds"] = round(time.monotonic() - started, 1)
        figures["compressed_bytes"] = Path(f"{disk}.zst").stat().st_size
    (out / f"{BUILT}.part").write_text(json.dumps(figures, indent=2) + "\n")
    os.replace(out / f"{BUILT}.part", out / BUILT)
    return figures


def finished(out: Path) -> dict | None:
    """The figures of a finished build in *out*, None if there is none."""
    try:
        return json.loads((out / BUILT).read_text())
    except FileNotFoundError:
        return None


def main(out: Path) -> dict:
    """The build in *out*, made unless it is there.  Two test runs in one
    tree (a person's and CI's, or two helpers') share the cache directory:
    the second waits on the lock and finds the first one's build."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return finished(out) or build(out)


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1])), indent=2))
