"""demo: the whole job on one machine, without hardware.  A QEMU VM (TCG,
Debian's iPXE ROM, user networking) netboots from the pxed pxectl is logged
in to, on this host, and its management OS writes a small disk image that
demo makes and uploads; each step is shown as pxed's public API reports it
(the machine's Progress, events and log).  Everything it made is removed at
the end, also on Ctrl-C, unless --keep."""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import click

from pxed import tools
from pxed.cli.client import CONNECTION, SERVER_ERROR, Api, CliError, EventStream, api
from pxed.cli.transfer import Progress, chunks, human

# A locally administered MAC (the 02 bit of the first byte): no real NIC has it.
DEMO_MAC = "02:70:78:65:64:01"
DEMO_NAME = "demo-vm"
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")  # Debian's ipxe-qemu
QEMU_PACKAGES = "apt-get install qemu-system-x86 ipxe-qemu"
MIB = 1 << 20
IMAGE_SIZE = 8 * MIB  # an MBR, then a 7 MiB ext4 partition holding hello.txt
DISK_SIZE = 64 * MIB  # the VM's scratch disk
POLL = 0.5
# QEMU's user networking: the guest reaches the host's loopback here.
HOST_FROM_GUEST = "10.0.2.2"
LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")
ENDED = ("queue.done", "queue.failed", "queue.cancelled")


def say(text: str) -> None:
    click.echo(text)
    sys.stdout.flush()


@click.command()
@click.option(
    "--timeout", type=float, default=600.0, show_default=True, help="Seconds the demo may take."
)
@click.option("--keep", is_flag=True, help="Keep the demo machine, image and setup afterwards.")
@click.option("--memory", type=int, default=768, show_default=True, help="The VM's MiB of RAM.")
def demo(timeout: float, keep: bool, memory: int) -> None:
    """Deploy a small image to a QEMU VM that netboots from pxed (same host).

    Needs qemu-system-x86_64 and Debian's iPXE ROMs, and an admin's token
    (it registers the machine demo-vm, MAC 02:70:78:65:64:01)."""
    qemu = _qemu()
    server = api()
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    made = _Made(server, keep)
    vm: subprocess.Popen | None = None
    with tempfile.TemporaryDirectory(prefix="pxectl-demo-") as tmp:
        try:
            say(f"pxectl demo: a QEMU VM netboots from {server.url} and gets a small image")
            _wait_for_mgmtos(server, deadline)
            _machine(server, made)
            image, sha = _image(server, made, Path(tmp))
            disk, serial = Path(tmp) / "disk.raw", Path(tmp) / "serial.log"
            with disk.open("wb") as f:
                f.truncate(DISK_SIZE)
            # What happens to the machine, from before its work is queued.
            with server.events(machine=DEMO_MAC) as stream:
                work = _queue(server, made, image)
                boot = _boot_url(server.url)
                say(f"[5/7] VM: {Path(qemu).name} (TCG), booting iPXE from {boot}")
                vm = _start_vm(qemu, boot, disk, serial, memory)
                _follow(stream, work, vm, serial, deadline)
            if vm.returncode != 0:
                raise CliError(f"QEMU exited with {vm.returncode}{_console(serial)}")
            say("[6/7] VM: stopped once its management OS had reported (QEMU -no-reboot)")
            _check_disk(disk, sha)
            say(f"Done in {time.monotonic() - started:.0f} s.")
        finally:
            if vm is not None and vm.poll() is None:
                vm.kill()
                vm.wait()
            made.clean()


# --- the steps -----------------------------------------------------------------


def _qemu() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        raise CliError(f"qemu-system-x86_64 not found: {QEMU_PACKAGES}")
    if not IPXE_ROM.exists():
        raise CliError(f"{IPXE_ROM} not found (Debian's iPXE ROM for QEMU): {QEMU_PACKAGES}")
    return path


def _wait_for_mgmtos(server: Api, deadline: float) -> None:
    """Until /healthz says the x86_64 management OS is ready (a pxed just
    started may be building it)."""
    waited = time.monotonic()
    shown = False
    while True:
        state = server.get("/healthz").get("mgmtos", {}).get("x86_64", "ready")
        if state == "ready":
            break
        if state != "building":
            raise CliError(
                f"pxed's x86_64 management OS is {state}: its log says how to build it"
                " (pxed builds it at start as root on Debian; mgmtos_build)"
            )
        if not shown:
            say("[1/7] management OS: pxed is building it, waiting (a few minutes the first time)")
            shown = True
        if time.monotonic() > deadline:
            raise CliError("timed out waiting for pxed to build the management OS")
        time.sleep(2)
    after = f" (after {time.monotonic() - waited:.0f} s)" if shown else ""
    say(f"[1/7] management OS: ready{after}")


def _machine(server: Api, made: _Made) -> None:
    existing = _get_or_none(server, f"/machine/{DEMO_MAC}")
    if existing is None:
        server.post(
            "/machine",
            {
                "Name": DEMO_NAME,
                "MacAddresses": [{"Mac": DEMO_MAC}],
                "Architecture": "x86_64",
                "Managed": True,
            },
        )
        made.machine = True
        say(f"[2/7] machine {DEMO_NAME} ({DEMO_MAC}): registered")
        return
    # Left by an earlier demo (--keep, or killed): its old work goes.
    for work in server.get(f"/machine/{DEMO_MAC}/boot/queue"):
        server.delete(f"/machine/{DEMO_MAC}/boot/queue/{work['ID']}")
    if not existing["Managed"]:
        server.put(f"/machine/{DEMO_MAC}", {"Managed": True})
    say(f"[2/7] machine {existing['Name']} ({DEMO_MAC}): already registered, reused")


def _image(server: Api, made: _Made, tmp: Path) -> tuple[str, str]:
    """A disk image made here and uploaded: (image UUID, its sha256)."""
    path = make_disk_image(tmp)
    created = server.post(
        "/image",
        {"Name": "pxed-demo", "Size": IMAGE_SIZE, "DiskCompressionStrategy": "none"},
    )
    made.image = created["UUID"]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(IMAGE_SIZE),
        "X-Checksum-Sha256": sha,
    }
    bar = Progress("      upload", IMAGE_SIZE, stream=sys.stdout)
    version = server.post_raw(f"/image/{made.image}", chunks(path, bar), headers)
    bar.finish()
    say(
        f"[3/7] image pxed-demo ({made.image}): a {human(IMAGE_SIZE)} disk (MBR, ext4 with"
        f" hello.txt), version {version['Version']}, sha256 {sha[:16]}…"
    )
    return made.image, sha


def _queue(server: Api, made: _Made, image: str) -> dict:
    me = server.me()["Username"]
    setup = server.post(
        f"/user/{me}/image_setup",
        {"Name": "pxed-demo", "Images": [{"UUID": image, "Update": False}]},
    )
    made.setup = (me, setup["UUID"])
    # No power driver (the VM has no BMC), so no Power nor After: demo
    # starts the VM itself, and QEMU (-no-reboot) ends when the management
    # OS reboots or powers off after reporting.
    work = server.post(f"/machine/{DEMO_MAC}/boot", {"SetupUUID": setup["UUID"], "Power": "none"})
    say(f"[4/7] setup pxed-demo ({setup['UUID']}): queued as work {work['ID']} on {DEMO_NAME}")
    return work


def _boot_url(url: str) -> str:
    """iPXE's boot file: pxed on this host's loopback is 10.0.2.2 to the
    VM; any other address the VM reaches through QEMU's NAT."""
    parts = urlsplit(url)
    if parts.hostname in LOOPBACK or (parts.hostname or "").startswith("127."):
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.scheme}://{HOST_FROM_GUEST}:{port}{parts.path.rstrip('/')}/ipxe"
    return url.rstrip("/") + "/ipxe"


def _start_vm(qemu: str, boot: str, disk: Path, serial: Path, memory: int) -> subprocess.Popen:
    args = [
        qemu, "-machine", "pc", "-accel", "tcg", "-m", str(memory),
        "-display", "none", "-monitor", "none", "-serial", f"file:{serial}",
        # A reboot ends QEMU: the management OS reboots (or powers off)
        # once its work is done.
        "-no-reboot",
        "-drive", f"file={disk},if=virtio,format=raw",
        "-netdev", f"user,id=n0,bootfile={boot}",
        # QEMU loads Debian's iPXE ROM for virtio-net by itself.
        "-device", f"virtio-net-pci,netdev=n0,mac={DEMO_MAC}",
        "-boot", "n",
    ]  # fmt: skip
    # QEMU's own messages go beside the serial log, shown with it on failure.
    with serial.with_name("qemu.log").open("wb") as out:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def _follow(
    stream: EventStream, work: dict, vm: subprocess.Popen, serial: Path, deadline: float
) -> None:
    """What pxed says of the machine (its events, its management OS's log
    lines, the image's progress), as it happens, until the work ended."""
    tag = f"work={work['ID']}"
    shown_percent = -1
    image_line = ""
    for kind, data in stream:
        if kind == "event":
            say(f"      event  {data['Action']}: {data['Detail']}")
            if data["Action"] == "boot.answer" and "not on a boot network" in data["Detail"]:
                raise CliError(
                    "pxed told the VM to boot from disk: QEMU's user networking reaches pxed"
                    " from 127.0.0.1, which is not in pxed's boot_networks; add"
                    ' "127.0.0.0/8" to boot_networks in its config and restart it'
                )
            if data["Action"] in ENDED and tag in data["Detail"].split():
                if data["Action"] != "queue.done":
                    how = data["Action"].removeprefix("queue.")
                    raise CliError(f"the work {how}: {data['Detail']}{_console(serial)}")
                if shown_percent < 100:
                    # The last report came with the end: all of it was written.
                    say(f"[5/7] {image_line or 'image'} written 100% ({human(IMAGE_SIZE)})")
                say(f"[5/7] work {work['ID']} done")
                break
        elif kind == "log":
            say(f"      mgmtos {data['Level']}: {data['Message']}")
        elif kind == "progress" and (progress := data["Progress"]) is not None:
            if progress["Image"] and progress["ImageTotal"]:
                percent = min(100, progress["ImageWritten"] * 100 // progress["ImageTotal"])
                if percent // 10 != shown_percent // 10:
                    shown_percent = percent
                    image_line = f"image {progress['Image'][:8]}"
                    say(
                        f"[5/7] {image_line} written {percent}%"
                        f" ({human(progress['ImageWritten'])} of {human(progress['ImageTotal'])})"
                    )
        # Checked at each message, and at least at each keep-alive.
        if vm.poll() is not None:
            raise CliError(f"the VM stopped before its work ended{_console(serial)}")
        if time.monotonic() > deadline:
            raise CliError(f"timed out (--timeout) before the work ended{_console(serial)}")
    else:
        raise CliError("the event stream ended before the work did", CONNECTION)
    # The management OS reboots or powers off once it has reported.
    while vm.poll() is None:
        if time.monotonic() > deadline:
            raise CliError(f"timed out waiting for the VM to power off{_console(serial)}")
        time.sleep(POLL)


def _check_disk(disk: Path, sha: str) -> None:
    digest = hashlib.sha256()
    with disk.open("rb") as f:
        digest.update(f.read(IMAGE_SIZE))
    if digest.hexdigest() != sha:
        raise CliError(
            f"the VM's disk does not hold the image: sha256 {digest.hexdigest()}, expected {sha}",
            SERVER_ERROR,
        )
    say(f"[7/7] disk check: the VM's disk holds the image byte for byte (sha256 {sha[:16]}…)")


# --- helpers ----------------------------------------------------------------------------


def _get_or_none(server: Api, path: str) -> dict | None:
    try:
        return server.get(path)
    except CliError as e:
        if e.exit_code == 4:
            return None
        raise


def _console(serial: Path) -> str:
    """The last lines of the VM's serial console and of QEMU's messages."""
    text = ""
    for path in (serial, serial.with_name("qemu.log")):
        text += path.read_text(errors="replace") if path.exists() else ""
    lines = [line for line in text.splitlines() if line.strip()][-15:]
    return ("; the VM's console ended with:\n" + "\n".join(lines)) if lines else ""


def make_disk_image(tmp: Path) -> Path:
    """IMAGE_SIZE bytes: an MBR with one Linux partition from 1 MiB on,
    holding an ext4 filesystem (mke2fs -d, e2fsprogs) with hello.txt."""
    root = tmp / "root"
    root.mkdir()
    (root / "hello.txt").write_text("Hello from pxed: its management OS wrote this disk.\n")
    path = tmp / "pxed-demo.img"
    with path.open("wb") as f:
        f.truncate(IMAGE_SIZE)
    start = MIB // 512
    sectors = (IMAGE_SIZE - MIB) // 512
    mke2fs = tools.find("mke2fs", package="e2fsprogs")
    tools.run(
        [mke2fs, "-F", "-q", "-t", "ext4", "-L", "pxed-demo", "-E", f"offset={MIB}",
         "-d", str(root), str(path), f"{(IMAGE_SIZE - MIB) // 1024}k"],
        timeout=60,
    )  # fmt: skip
    # One partition entry: not bootable, CHS unused (0xfe 0xff 0xff), type
    # 0x83 (Linux), its first sector and length; then the boot signature.
    entry = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", start, sectors)
    with path.open("r+b") as f:
        f.seek(446)
        f.write(entry + bytes(48) + b"\x55\xaa")
    return path


class _Made:
    """What the demo registered, removed at the end unless --keep."""

    def __init__(self, server: Api, keep: bool) -> None:
        self.server, self.keep = server, keep
        self.machine = False
        self.image: str | None = None
        self.setup: tuple[str, str] | None = None

    def clean(self) -> None:
        if self.keep:
            say(f"Kept machine {DEMO_NAME} ({DEMO_MAC}), image pxed-demo and setup (--keep).")
            return
        # Queued work first (an interrupted demo), then what refers to the
        # image, then the image.
        steps = []
        try:
            if _get_or_none(self.server, f"/machine/{DEMO_MAC}") is not None:
                for work in self.server.get(f"/machine/{DEMO_MAC}/boot/queue"):
                    steps.append(f"/machine/{DEMO_MAC}/boot/queue/{work['ID']}")
        except CliError as e:
            say(f"cleaning up: {e.message}")
        if self.machine:
            steps.append(f"/machine/{DEMO_MAC}")
        if self.setup is not None:
            steps.append(f"/user/{self.setup[0]}/image_setup/{self.setup[1]}")
        if self.image is not None:
            steps.append(f"/image/{self.image}")
        for path in steps:
            try:
                self.server.delete(path)
            except CliError as e:
                say(f"cleaning up: DELETE {path}: {e.message}")
        if steps:
            say("Removed what the demo made (--keep keeps it).")
