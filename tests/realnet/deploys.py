"""Deploys in the lab: an image queued for a machine through pxed's API,
the VM's disk checked afterwards against the version's sha256, and the
time each firmware took written down."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import defer

from tests.helpers import MIB, add_machine, enqueue, new_image, upload_version
from tests.realnet import lab, labvm
from tests.realnet.labpxed import LabPxed
from tests.realnet.labvm import Boot, Firmware

# Small: what is proven is the way to the management OS, not the
# throughput (tests/e2e has that), and TCG is slow.
IMAGE_SIZE = 4 * MIB
DISK_SIZE = 16 * MIB


@dataclass
class Deploy:
    mac: str
    image: str
    sha256: str
    disk: Path


def payload(seed: int, size: int = IMAGE_SIZE) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


async def queue_deploy(px: LabPxed, mac: str, seed: int, disk_dir: Path) -> Deploy:
    """A managed machine *mac*, an image of its own (``payload(seed)``)
    queued for it, and a blank disk for its VM."""
    name = "vm-" + mac.replace(":", "")[-6:]
    await add_machine(px, mac, name=name)
    image = await new_image(px.admin, name)
    data = payload(seed)
    version = await upload_version(px.admin, image, data)
    versions = (await px.admin.get(f"/image/{image}")).json()["Versions"]
    sha256 = next(v["Sha256"] for v in versions if v["Version"] == version)
    assert sha256 == hashlib.sha256(data).hexdigest()
    await enqueue(px.admin, [{"UUID": image, "Version": version}], mac, user="admin", name=name)
    disk = disk_dir / f"{name}.raw"
    with disk.open("wb") as f:
        f.truncate(DISK_SIZE)
    return Deploy(mac, image, sha256, disk)


def disk_sha256(disk: Path, size: int = IMAGE_SIZE) -> str:
    """The sha256 of the first *size* bytes of *disk*, read in pieces."""
    digest = hashlib.sha256()
    with disk.open("rb") as f:
        left = size
        while left and (chunk := f.read(min(left, MIB))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


async def assert_deployed(px: LabPxed, deploy: Deploy, boot: Boot) -> None:
    """The VM powered off after its work, pxed says the machine is
    deployed with nothing left queued, and its disk holds the image."""
    tail = boot.run.serial[-3000:]
    assert boot.run.exit_code == 0, f"{boot.firmware.name} {deploy.mac}: {tail}"
    machine = (await px.admin.get(f"/machine/{deploy.mac}")).json()
    assert machine["State"] == "deployed", (machine, tail)
    assert (await px.admin.get(f"/machine/{deploy.mac}/boot/queue")).json() == []
    assert disk_sha256(deploy.disk) == deploy.sha256, f"{deploy.mac}: the disk is not the image"


def record(tmp_path: Path, boots: list[Boot]) -> Path:
    """Each boot's timings, printed (the CI log) and written to
    timings.json in the test's tmp dir."""
    rows = [b.timings() for b in boots]
    out = tmp_path / "timings.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    for row in rows:
        print(
            f"\n{row['firmware']} ({row['mac']}): pxed's answer after "
            f"{row['seconds_to_pxed_answer']} s, deployed and off after "
            f"{row['seconds_to_deploy_complete_and_poweroff']} s"
        )
    return out


async def boot_at_once(
    px: LabPxed, qemu: str, tmp_path: Path, vms: list[tuple[Firmware, Deploy]]
) -> list[Boot]:
    """Each (firmware, deploy) of *vms* a VM powered on together with the
    others (a tap each) and run until it powers off; their timings
    recorded.  Whether each deployed is the caller's to check."""
    assert len(vms) <= len(lab.TAPS), f"the lab has {len(lab.TAPS)} taps"
    boots = await defer.gatherResults(
        [
            defer.ensureDeferred(
                labvm.boot(
                    qemu,
                    firmware,
                    tap=tap,
                    mac=deploy.mac,
                    disk=deploy.disk,
                    serial=tmp_path / f"serial-{firmware.name}.log",
                    at_pxed=px.asked(deploy.mac),
                )
            )
            for (firmware, deploy), tap in zip(vms, lab.TAPS, strict=False)
        ],
        consumeErrors=True,
    )
    record(tmp_path, boots)
    return boots


async def deploy_at_once(
    px: LabPxed, qemu: str, tmp_path: Path, vms: list[tuple[Firmware, str]]
) -> list[Boot]:
    """Each (firmware, MAC) of *vms* a machine with an image of its own
    queued, their VMs powered on together, each checked deployed."""
    deploys = [await queue_deploy(px, mac, seed, tmp_path) for seed, (_, mac) in enumerate(vms)]
    pairs = [(firmware, deploy) for (firmware, _), deploy in zip(vms, deploys, strict=True)]
    boots = await boot_at_once(px, qemu, tmp_path, pairs)
    for deploy, boot in zip(deploys, boots, strict=True):
        await assert_deployed(px, deploy, boot)
    return boots
