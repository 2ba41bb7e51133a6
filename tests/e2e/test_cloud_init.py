"""Issue 21 end to end: a Debian bookworm image with cloud-init, built from
Debian packages during the run (tests/debianimage.py, started by
tests/e2e/conftest.py as the session begins), deployed by pxed's
management OS to a VM whose first disk is larger than the image and whose
second disk holds an old ext4.  Then the VM boots the deployed disk under
UEFI (OVMF, systemd-boot) with port 22 forwarded to the host, and the test
logs in with the deploying user's key.

One deploy and one boot carry all four features: the NoCloud seed (key,
hostname, network-config by MAC), Grow (the root partition and its ext4 to
the disk's end, less the seed), and the erase policy ``metadata`` (the
machine is new to pxed, so its last user counts as another user: the second
disk's old signatures are gone)."""

from __future__ import annotations

import os
import struct
import subprocess
import time

import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from pxed.agent import gpt
from tests.helpers import MAC, MIB, add_machine, enqueue, free_port, require_tool, upload_version
from tests.vmfixtures import run_vm

GIB = 1024 * MIB
HOSTNAME = "cloud-init-e2e"
# Debian's cloud-init makes this user, with the seed's keys and sudo.
LOGIN = "debian"


def make_key(tmp_path) -> tuple[str, str]:
    """A new ed25519 key pair: (private key file, public key line)."""
    key = tmp_path / "id_ed25519"
    subprocess.run(
        [require_tool("ssh-keygen", "openssh-client"), "-q", "-t", "ed25519", "-N", "", "-f", key],
        check=True,
    )
    return str(key), (tmp_path / "id_ed25519.pub").read_text().strip()


def signatures(path) -> str:
    """What wipefs finds on a disk file: its signatures, one a line."""
    done = subprocess.run(
        [require_tool("wipefs", "util-linux"), "-n", "-p", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def root_partition(path) -> tuple[int, int, int]:
    """The disk file's last-ending GPT partition and the ext4 in it, from
    the host: (partition bytes, ext4 bytes, bytes after the partition)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        total = os.lseek(fd, 0, os.SEEK_END)
        table = gpt.read(fd)
        assert table is not None, "no GPT on the deployed disk"
        parts = sorted((p for p in table.partitions), key=lambda p: p.last)
        # The last one is the cloud-init seed; the root is the one before.
        root = parts[-2]
        start = root.first * gpt.SECTOR
        superblock = os.pread(fd, 1024, start + 1024)
    finally:
        os.close(fd)
    assert superblock[56:58] == b"\x53\xef", "no ext4 in the root partition"
    (lo,) = struct.unpack_from("<I", superblock, 4)
    (log_size,) = struct.unpack_from("<I", superblock, 24)
    (hi,) = struct.unpack_from("<I", superblock, 0x150)
    blocks = lo | (hi << 32)
    size = (root.last - root.first + 1) * gpt.SECTOR
    return size, blocks * (1024 << log_size), total - (root.last + 1) * gpt.SECTOR


def ssh(key: str, port: int, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            require_tool("ssh", "openssh-client"),
            "-i",
            key,
            "-p",
            str(port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "LogLevel=ERROR",
            f"{LOGIN}@127.0.0.1",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def logged_in(key: str, port: int, command: str, deadline: float, vm) -> str:
    """*command*'s output once the VM lets the key in (cloud-init wrote it
    and sshd is up), trying until *deadline* or the VM's end."""
    last = None
    while time.monotonic() < deadline and not vm.called:
        last = await threads.deferToThread(ssh, key, port, command)
        if last.returncode == 0:
            return last.stdout
        await defer.ensureDeferred(_sleep(3))
    raise AssertionError(f"no SSH login: {last and (last.stderr or last.stdout)}")


async def _sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_cloud_init_debian_deploy_boots_configured_grown_and_clean(
    start_netboot, qemu, tmp_path, debian_image
):
    image_file, figures = debian_image
    print(f"\nDebian image build: {figures}")
    require_tool("ssh", "openssh-client")
    key, public = make_key(tmp_path)
    server = await start_netboot()

    alice = await server.user("alice")
    r = await alice.post("/user/alice/keys", {"Key": public})
    assert r.code == 201, r.text
    # A machine new to pxed: its last user is unknown, so alice's work
    # erases its disks under the default policy, metadata.
    machine = await add_machine(server, name=HOSTNAME)
    assert machine["Erase"] == "metadata", machine
    r = await alice.post(
        "/image",
        {
            "Name": "debian-cloud",
            "Size": figures["image_bytes"],
            "DiskCompressionStrategy": "zstd",
            "CloudInit": True,
            "Grow": True,
        },
    )
    assert r.code == 201, r.text
    image = r.json()["UUID"]
    version = await upload_version(alice, image, image_file.read_bytes())
    await enqueue(alice, [{"UUID": image, "Version": version}], user="alice", name="cloud")

    # Sparse files: the boot disk twice the image, the second one an old
    # user's ext4.
    disk = tmp_path / "boot.raw"
    with open(disk, "wb") as f:
        f.truncate(2 * figures["image_bytes"])
    old = tmp_path / "old.raw"
    with open(old, "wb") as f:
        f.truncate(64 * MIB)
    subprocess.run(
        [require_tool("mkfs.ext4", "e2fsprogs"), "-q", "-F", "-L", "olddata", str(old)], check=True
    )
    assert "ext4" in signatures(old)

    started = time.monotonic()
    run = await run_vm(qemu, tmp_path, [disk, old], port=server.port, timeout=420)
    deploy_seconds = time.monotonic() - started
    machine = (await server.admin.get(f"/machine/{MAC}")).json()
    assert run.exit_code == 0 and machine["State"] == "deployed", run.serial[-4000:]
    logs = [line["Message"] for line in (await server.admin.get(f"/machine/{MAC}/logs")).json()]
    steps = ("deployed", "grew", "erasing", "cloud-init")
    print(f"\nmanagement OS log: {[m for m in logs if m.startswith(steps)]}")

    # From the host: the second disk is blank, the root partition and its
    # ext4 end at the disk's end but for the seed and the backup GPT.
    assert signatures(old) == "", "the old filesystem's signatures survived"
    part_size, fs_size, after = root_partition(disk)
    assert after <= 4 * MIB, after
    assert part_size - fs_size < 4 * MIB, (part_size, fs_size)
    assert part_size > figures["image_bytes"], "not grown"

    # The deployed disk boots; the seed's key lets the test in.
    port = free_port()
    stop = [False]
    started = time.monotonic()
    vm = defer.ensureDeferred(
        run_vm(
            qemu,
            tmp_path,
            [disk, old],
            uefi=True,
            ssh_port=port,
            timeout=600,
            stop_when=lambda _: stop[0],
        )
    )
    try:
        out = await logged_in(
            key,
            port,
            "hostname; findmnt -bno SIZE /; sudo -n wipefs -n -p /dev/vdb; echo end",
            time.monotonic() + 540,
            vm,
        )
    except AssertionError as e:
        stop[0] = True
        raise AssertionError(f"{e}\n{(await vm).serial[-4000:]}") from None
    boot_seconds = time.monotonic() - started
    stop[0] = True
    booted = await vm
    lines = out.splitlines()
    assert lines[0] == HOSTNAME, (out, booted.serial[-4000:])
    root_size = int(lines[1])
    # statfs's size leaves out ext4's own metadata: within a few percent.
    assert root_size > 0.9 * fs_size, (root_size, fs_size)
    assert lines[2:] == ["end"], f"signatures on the second disk: {lines[2:]}"
    print(
        f"\ncloud_init e2e: image {figures['image_bytes']} bytes "
        f"({figures['compressed_bytes']} zstd), deploy VM {deploy_seconds:.1f} s, "
        f"boot to SSH login {boot_seconds:.1f} s, root {root_size} bytes on a "
        f"{2 * figures['image_bytes']}-byte disk"
    )
