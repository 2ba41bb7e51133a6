"""A deploy that cannot be done right fails with the step and the reason,
and the work is never reported done: damaged or resized stored files, a
server that drops mid-stream, a disk too small, too few disks, an unknown
compression, a missing zstandard module."""

from __future__ import annotations

import pytest
import pytest_twisted
import sqlalchemy as sa
import zstandard

from pxed.db.schema import images
from tests.agent.conftest import data, disk_file, version_file
from tests.helpers import MIB


async def failed(machine) -> str:
    """The failed work's message (as pxed recorded it)."""
    work = await machine.work()
    assert work["State"] == "failed", work
    [end] = work["Ends"]
    assert end["Action"] == "queue.failed"
    return end["Detail"]


@pytest_twisted.ensureDeferred
async def test_a_wrong_sha256_fails_and_says_the_disk_holds_damaged_data(
    machine_with, server, tmp_path
):
    machine, [(uuid, version)] = await machine_with([(data(2 * MIB), "none", False)])
    with open(version_file(server, uuid, version), "r+b") as f:
        f.seek(MIB)
        f.write(b"\xff" * 4096)
    disk = disk_file(tmp_path / "disk", 4 * MIB)

    run = await machine.agent([disk])

    assert run.code == 1
    detail = await failed(machine)
    assert f"deploying image img0 ({uuid}) v{version} to {disk}" in detail
    assert "sha256 mismatch" in detail and "damaged data" in detail
    assert not any(m.startswith("deployed ") for m in await machine.logs())


@pytest_twisted.ensureDeferred
async def test_a_size_mismatch_fails_before_writing(machine_with, server, tmp_path):
    machine, [(uuid, version)] = await machine_with([(data(2 * MIB), "none", False)])
    with open(version_file(server, uuid, version), "ab") as f:
        f.write(b"more")
    disk = disk_file(tmp_path / "disk", 4 * MIB)

    run = await machine.agent([disk])

    assert run.code == 1
    detail = await failed(machine)
    assert "size mismatch" in detail and str(2 * MIB) in detail
    assert disk.read_bytes() == bytes(4 * MIB), "nothing written"


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest_twisted.ensureDeferred
async def test_a_server_that_drops_mid_stream_fails_the_work(
    machine_with, proxy, tmp_path, compression
):
    raw = data(6 * MIB, seed=3)
    blob = zstandard.ZstdCompressor().compress(raw) if compression == "zstd" else raw
    machine, _ = await machine_with([(blob, compression, False)])
    proxy.cut_after = 3 * MIB
    disk = disk_file(tmp_path / "disk", 8 * MIB)

    run = await machine.agent([disk], url=proxy.url)

    assert proxy.cuts == 1
    assert run.code == 1
    detail = await failed(machine)
    assert "deploying image img0" in detail and "download failed" in detail
    assert "closed after" in detail or "broke off" in detail, detail
    assert not any(m.startswith("deployed ") for m in await machine.logs())


@pytest_twisted.ensureDeferred
async def test_a_disk_smaller_than_a_raw_image_fails_before_writing(machine_with, tmp_path):
    machine, _ = await machine_with([(data(3 * MIB), "none", False)])
    disk = disk_file(tmp_path / "disk", 2 * MIB, b"\x11" * 2 * MIB)

    run = await machine.agent([disk])

    assert run.code == 1
    detail = await failed(machine)
    assert f"the image ({3 * MIB} bytes) is larger than {disk} ({2 * MIB} bytes)" in detail
    assert disk.read_bytes() == b"\x11" * 2 * MIB


@pytest.mark.parametrize("declared", [True, False])
@pytest_twisted.ensureDeferred
async def test_a_disk_smaller_than_a_zstd_image_fails_and_never_grows(
    machine_with, tmp_path, declared
):
    raw = data(3 * MIB, seed=4)
    cctx = zstandard.ZstdCompressor(write_content_size=declared)
    if declared:
        blob = cctx.compress(raw)
    else:  # streamed: the frame does not say how large the image is
        obj = cctx.compressobj()
        blob = obj.compress(raw) + obj.flush()
    machine, _ = await machine_with([(blob, "zstd", False)])
    disk = disk_file(tmp_path / "disk", 2 * MIB, b"\x11" * 2 * MIB)

    run = await machine.agent([disk])

    assert run.code == 1
    detail = await failed(machine)
    assert f"larger than {disk} ({2 * MIB} bytes)" in detail, detail
    assert disk.stat().st_size == 2 * MIB
    content = disk.read_bytes()
    if declared:
        assert content == b"\x11" * 2 * MIB, "known too large: nothing written"
    else:
        assert content == raw[: 2 * MIB], "written up to the disk's end, not past it"


@pytest_twisted.ensureDeferred
async def test_more_images_than_disks_fails_naming_both_counts(machine_with, tmp_path):
    machine, _ = await machine_with([(data(MIB), "none", False), (data(MIB, 2), "none", False)])
    disk = disk_file(tmp_path / "disk", 2 * MIB)

    run = await machine.agent([disk])

    assert run.code == 1
    detail = await failed(machine)
    assert "finding the disks" in detail
    assert "the setup has 2 image(s) but this machine has 1 disk(s)" in detail
    assert disk.read_bytes() == bytes(2 * MIB)


async def set_image(server, uuid: str, **values) -> None:
    def change(conn):
        conn.execute(sa.update(images).where(images.c.uuid == uuid).values(**values))

    await server.db.run(change)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("compression", "lz4", "unknown DiskCompressionStrategy 'lz4'"),
        ("file_type", "qcow2", "ImageFileType 'qcow2': this management OS writes raw images only"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_what_the_agent_cannot_write_fails_clearly(
    machine_with, server, tmp_path, column, value, reason
):
    machine, [(uuid, _)] = await machine_with([(data(MIB), "none", False)])
    # pxed itself takes neither: as a newer server might say.
    await set_image(server, uuid, **{column: value})
    disk = disk_file(tmp_path / "disk", 2 * MIB)

    run = await machine.agent([disk])

    assert run.code == 1
    assert reason in await failed(machine)
    assert disk.read_bytes() == bytes(2 * MIB)


@pytest_twisted.ensureDeferred
async def test_without_the_zstandard_module_a_zstd_image_fails_clearly(machine_with, tmp_path):
    machine, _ = await machine_with(
        [(zstandard.ZstdCompressor().compress(data(MIB)), "zstd", False)]
    )
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "zstandard.py").write_text("raise ImportError('No module named zstandard')\n")
    disk = disk_file(tmp_path / "disk", 2 * MIB)

    run = await machine.agent([disk], env={"PYTHONPATH": f"{hide}:{machine.tmp.parent}"})

    assert run.code == 1, run.output
    assert "python3-zstandard" in await failed(machine)


@pytest_twisted.ensureDeferred
async def test_a_disk_that_cannot_be_opened_fails_the_work(machine_with, tmp_path):
    machine, _ = await machine_with([(data(MIB), "none", False)])
    missing = tmp_path / "no-such-disk"

    facts = {**machine.facts, "Disks": [{"Path": str(missing), "Size": 4 * MIB}]}
    run = await machine.agent([], facts=facts)

    assert run.code == 1
    detail = await failed(machine)
    assert f"cannot open {missing} for writing" in detail
    assert not missing.exists(), "a missing disk is not created"


@pytest_twisted.ensureDeferred
async def test_an_agent_stopped_mid_deploy_reports_the_work_failed(machine_with, proxy, tmp_path):
    machine, [(uuid, version)] = await machine_with([(data(4 * MIB), "none", False)])
    proxy.rate = MIB  # about 4 s of writing
    disk = disk_file(tmp_path / "disk", 8 * MIB)

    run = await machine.agent([disk], url=proxy.url, terminate_after=2.0)

    assert run.code == 1, run.output
    detail = await failed(machine)
    assert f"deploying image img0 ({uuid}) v{version} to {disk}: interrupted (SIGTERM)" in detail
