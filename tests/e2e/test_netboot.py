"""The five scenarios: deploy, capture, single shot, failure, and a disk
built from a Dockerfile booting under UEFI."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile

import pytest_twisted
from twisted.logger import globalLogPublisher

from tests.helpers import (
    MAC,
    MIB,
    add_machine,
    enqueue,
    new_image,
    submit,
    upload_version,
    wait_done,
)
from tests.vmfixtures import run_vm


def data(size: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


async def queue_image(server, image_uuid: str, version: int, update: bool = False) -> dict:
    images = [{"UUID": image_uuid, "Version": version, "Update": update}]
    return await enqueue(server.admin, images, user="admin", name="e2e")


async def queued_upload(
    server, name: str, payload: bytes, update: bool = False
) -> tuple[str, int, dict]:
    """The machine, and a new image *name* with *payload* as its version 1
    queued for it: (image, version, queue entry)."""
    await add_machine(server)
    image = await new_image(server.admin, name)
    version = await upload_version(server.admin, image, payload)
    return image, version, await queue_image(server, image, version, update)


def blank_disk(tmp_path, name: str, size: int, fill: bytes = b"") -> object:
    disk = tmp_path / name
    with open(disk, "wb") as f:
        f.write(fill)
        f.truncate(size)
    return disk


async def work(server) -> dict:
    return (await server.admin.get(f"/machine/{MAC}")).json()


@pytest_twisted.ensureDeferred
async def test_a_deploy_writes_the_disk_byte_for_byte(netboot_server, qemu, tmp_path):
    server = netboot_server
    payload = data(24 * MIB, seed=1)
    _, _, entry = await queued_upload(server, "deploy", payload)
    disk = blank_disk(tmp_path, "disk.raw", 64 * MIB)

    run = await run_vm(qemu, tmp_path, [disk], port=server.port)
    assert run.exit_code == 0, run.serial[-3000:]
    with open(disk, "rb") as f:
        assert f.read(len(payload)) == payload
    machine = await work(server)
    assert machine["State"] == "deployed", run.serial[-3000:]
    assert (await server.admin.get(f"/machine/{MAC}/boot/queue")).json() == []
    events = (await server.admin.get("/events?target_type=machine")).json()
    assert any(e["Action"] == "queue.done" and f"work={entry['ID']}" in e["Detail"] for e in events)
    logs = [line["Message"] for line in (await server.admin.get(f"/machine/{MAC}/logs")).json()]
    deployed = [m for m in logs if m.startswith("deployed ")]
    assert deployed, logs
    # The work's timeline, with the image written and its throughput, and
    # the inventory the management OS sent on the way.
    timeline = [
        e["Action"]
        for e in reversed((await server.admin.get(f"/machine/{MAC}/events")).json())
        if e["Action"].startswith(("queue.", "work.")) and f"work={entry['ID']}" in e["Detail"]
    ]
    assert timeline == [
        "queue.add",
        "work.netboot",
        "queue.start",
        "work.image-written",
        "queue.done",
    ], timeline
    written = [e for e in events if e["Action"] == "work.image-written"]
    assert f"{len(payload)} bytes in" in written[0]["Detail"] and "MB/s" in written[0]["Detail"]
    assert machine["Progress"] is None, "no work left"
    hardware = (await server.admin.get(f"/machine/{MAC}/hardware")).json()
    assert hardware["Source"] == "deploy" and hardware["Disks"][0]["Size"] == 64 * MIB
    print(f"\nprogress: {written[0]['Detail']}")
    # The deploy throughput the VM reached, for the CI log.
    print(f"\nVM deploy under TCG: {deployed[0]} (whole VM run {run.seconds:.1f} s)")


@pytest_twisted.ensureDeferred
async def test_b_capture_makes_a_new_version_of_the_disk(netboot_server, qemu, tmp_path):
    server = netboot_server
    payload = data(4 * MIB, seed=2)
    image, _, _ = await queued_upload(server, "captured", payload, update=True)
    before = data(3 * MIB, seed=3)
    disk = blank_disk(tmp_path, "disk.raw", 32 * MIB, before)
    disk_sha = hashlib.sha256(disk.read_bytes()).hexdigest()

    run = await run_vm(qemu, tmp_path, [disk], port=server.port)
    assert run.exit_code == 0, run.serial[-3000:]
    versions = (await server.admin.get(f"/image/{image}")).json()["Versions"]
    captured = [v for v in versions if v["Origin"] == "capture"]
    assert captured, (versions, run.serial[-3000:])
    assert captured[-1]["Sha256"] == disk_sha
    assert captured[-1]["Size"] == 32 * MIB
    with open(disk, "rb") as f:
        assert f.read(len(payload)) == payload


@pytest_twisted.ensureDeferred
async def test_c_single_shot_after_completion(netboot_server, qemu, tmp_path):
    server = netboot_server
    await queued_upload(server, "once", data(2 * MIB, seed=4))
    disk = blank_disk(tmp_path, "disk.raw", 16 * MIB)
    run = await run_vm(qemu, tmp_path, [disk], port=server.port)
    assert run.exit_code == 0, run.serial[-3000:]
    assert (await work(server))["State"] == "deployed"

    fetched: list[str] = []

    def watch(event):
        if event.get("log_namespace") == "pxed.access":
            fetched.append(event.get("path", ""))

    globalLogPublisher.addObserver(watch)
    try:
        answered = []

        async def answers() -> list[str]:
            events = (await server.admin.get(f"/machine/{MAC}/events")).json()
            return [e["Detail"] for e in events if e["Action"] == "boot.answer"]

        before = len(await answers())
        run = await run_vm(
            qemu,
            tmp_path,
            [disk],
            port=server.port,
            timeout=90,
            stop_when=lambda _: any(p.startswith("/ipxe/") for p in fetched),
        )
        answered = (await answers())[: len(await answers()) - before]
    finally:
        globalLogPublisher.removeObserver(watch)
    assert any(p.startswith("/ipxe/") for p in fetched), fetched
    assert not any(p.startswith("/static/") for p in fetched), "the kernel was fetched again"
    assert answered and all("local disk" in a for a in answered), answered
    assert (await server.admin.get(f"/ipxe/{MAC}")).text.strip().endswith("exit")


@pytest_twisted.ensureDeferred
async def test_d_a_damaged_version_fails_with_the_reason(netboot_server, qemu, tmp_path):
    server = netboot_server
    image, version, entry = await queued_upload(server, "damaged", data(4 * MIB, seed=5))
    # Flip bytes in the stored file behind pxed's back.
    path = server.config.data_dir / "images" / image / f"{version}.img"
    with open(path, "r+b") as f:
        f.seek(MIB)
        f.write(b"\xff" * 4096)
    disk = blank_disk(tmp_path, "disk.raw", 16 * MIB)

    run = await run_vm(qemu, tmp_path, [disk], port=server.port)
    assert run.exit_code == 0, run.serial[-3000:]
    machine = await work(server)
    assert machine["State"] == "failed", run.serial[-3000:]
    events = (await server.admin.get(f"/machine/{MAC}/events")).json()
    failed = [e for e in events if e["Action"] == "queue.failed"]
    assert failed and f"work={entry['ID']}" in failed[0]["Detail"]
    assert re.search(r"sha256|checksum", failed[0]["Detail"], re.I), failed[0]["Detail"]
    queue = (await server.admin.get(f"/machine/{MAC}/boot/queue")).json()
    assert queue == [], "nothing stays in progress"


@pytest_twisted.ensureDeferred
async def test_e_a_built_disk_boots_under_uefi(
    start_netboot, qemu, mgmtos, tmp_path, docker_host, base_image
):
    server = await start_netboot(docker_host=docker_host)
    await add_machine(server)
    marker = "PXED-BUILT-IMAGE-BOOTED"
    # 1. An initramfs whose /init announces itself and powers off.
    initrd_image = await new_image(server.admin, "initrd")
    init = (
        "#!/bin/sh\\n"
        "/bin/busybox mount -t devtmpfs devtmpfs /dev\\n"
        # The entry says console=ttyS0 console=tty0: /dev/console is the screen.
        f"echo {marker} > /dev/ttyS0\\n"
        "/bin/busybox poweroff -f\\n"
    )
    initrd = await wait_done(
        server.admin,
        (
            await submit(
                server.admin,
                initrd_image,
                "FROM pxed-test-busybox:latest\n"
                f"RUN mkdir -p /dev /proc /sys && printf '{init}' > /init && chmod 755 /init\n",
                "initramfs",
            )
        )["ID"],
    )
    assert initrd["State"] == "succeeded", initrd
    initrd_bytes = (await server.admin.get(f"/image/{initrd_image}/{initrd['Version']}")).body
    # 2. A disk with the management OS's Debian kernel and that initramfs
    #    in /boot: the builder puts systemd-boot and an entry on the ESP.
    kernel = (mgmtos / "mgmtos" / "x86_64" / "vmlinuz").read_bytes()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w:gz") as tar:
        for name, blob in (("vmlinuz", kernel), ("initrd.img", initrd_bytes)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    # zstd: the mostly empty disk crosses the emulated network small.
    r = await server.admin.post(
        "/image", {"Name": "bootable", "Size": MIB, "DiskCompressionStrategy": "zstd"}
    )
    bootable = r.json()["UUID"]
    built = await wait_done(
        server.admin,
        (
            await submit(
                server.admin,
                bootable,
                "FROM pxed-test-busybox:latest\n"
                "COPY vmlinuz /boot/vmlinuz-6.1.0-pxed\n"
                "COPY initrd.img /boot/initrd.img-6.1.0-pxed\n",
                "disk",
                context=context.getvalue(),
            )
        )["ID"],
    )
    assert built["State"] == "succeeded", built
    # 3. Deployed as in (a), then booted from its disk with OVMF.
    await queue_image(server, bootable, built["Version"])
    # Sparse, and larger than the built disk (its Size is the compressed one).
    disk = blank_disk(tmp_path, "disk.raw", 512 * MIB)
    run = await run_vm(qemu, tmp_path, [disk], port=server.port, timeout=300)
    assert run.exit_code == 0 and (await work(server))["State"] == "deployed", run.serial[-3000:]
    run = await run_vm(
        qemu, tmp_path, [disk], uefi=True, timeout=240, stop_when=lambda text: marker in text
    )
    assert marker in run.serial, run.serial[-3000:]
