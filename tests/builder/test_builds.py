"""Builds on a real Docker engine: Dockerfile in, bootable disk image out,
nothing left behind."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.helpers import new_image, require_tool, submit, wait_done


@pytest.fixture
def engine_state(docker_host):
    import docker

    client = docker.DockerClient(base_url=docker_host)

    def snapshot(label: str | None = None):
        """The IDs of the engine's containers and images (with *label*).
        The low-level calls: the high-level lists inspect each item after
        listing, and fail on one that a build's cleanup removes meanwhile."""
        filters = {"label": label} if label else None
        return (
            {c["Id"] for c in client.api.containers(all=True, filters=filters)},
            {i["Id"] for i in client.api.images(all=True, filters=filters)},
        )

    yield client, snapshot
    client.close()


@pytest_twisted.async_yield_fixture
async def builder(start_server, docker_host, base_image, engine_state):
    server = await start_server(docker_host=docker_host)
    server.image = await new_image(server.admin, "built")
    yield server


async def log_of(server, build_id: int, follow: bool = True) -> str:
    """The build log; followed, the answer ends when the build does."""
    query = "" if follow else "?follow=0"
    return (await server.admin.get(f"/build/{build_id}/log{query}")).text


async def assert_nothing_left(server, engine_state, before) -> None:
    """Cleanup runs just after a build ends; give it a moment."""
    for _ in range(100):
        try:
            return _nothing_left(server, engine_state, before)
        except AssertionError:
            await task.deferLater(reactor, 0.2, lambda: None)
    _nothing_left(server, engine_state, before)


def _nothing_left(server, engine_state, before) -> None:
    _, snapshot = engine_state
    containers, images = snapshot()
    assert containers <= before[0], "containers left in the engine"
    assert images <= before[1], "images left in the engine"
    assert snapshot("pxed.build") == (set(), set()), "labelled containers or images left"
    data = server.config.data_dir
    assert list((data / "images" / ".staging").iterdir()) == []
    assert list((data / "builds").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_dockerfile_to_bootable_gpt_disk(builder, engine_state, tmp_path):
    sgdisk = require_tool("sgdisk", "gdisk")
    debugfs = require_tool("debugfs", "e2fsprogs")
    mdir = require_tool("mdir", "mtools")
    before = engine_state[1]()
    answer = await submit(
        builder.admin,
        builder.image,
        "FROM pxed-test-busybox:latest\nRUN echo built-by-pxed > /etc/marker\n",
    )
    assert answer["State"] in ("queued", "running")
    assert answer["Image"] == builder.image
    assert answer["URL"].endswith(f"/build/{answer['ID']}")
    build = await wait_done(builder.admin, answer["ID"])
    log = await log_of(builder, answer["ID"])
    assert build["State"] == "succeeded", log
    assert build["Version"] == 1
    assert set(build["Timings"]) == {"build", "export", "assemble"}
    assert "Step 2/" in log and "committed version 1" in log

    image = (await builder.admin.get(f"/image/{builder.image}")).json()
    assert image["Versions"][1]["Origin"] == "build"
    disk = tmp_path / "disk.img"
    disk.write_bytes((await builder.admin.get(f"/image/{builder.image}/1")).body)

    table = subprocess.run([sgdisk, "-p", str(disk)], capture_output=True, text=True).stdout
    rows = [line.split() for line in table.splitlines() if line.strip()[:1].isdigit()]
    assert [r[5] for r in rows] == ["EF00", "8304"], table
    assert (
        subprocess.run([sgdisk, "-v", str(disk)], capture_output=True, text=True).stdout.count(
            "No problems found"
        )
        == 1
    )
    sector = 512
    root_start = int(rows[1][1]) * sector
    marker = subprocess.run(
        [debugfs, "-R", "cat /etc/marker", f"{disk}?offset={root_start}"],
        capture_output=True,
        text=True,
    )
    if "offset" in marker.stderr and marker.returncode != 0:  # older debugfs
        pytest.fail(marker.stderr)
    assert marker.stdout.strip() == "built-by-pxed", marker.stderr
    esp_start = int(rows[0][1]) * sector
    listing = subprocess.run(
        [mdir, "-i", f"{disk}@@{esp_start}", "::/EFI"], capture_output=True, text=True
    )
    assert "BOOT" in listing.stdout, listing.stderr
    # The Dockerfile is kept with the version.
    kept = builder.config.data_dir / "images" / builder.image / "1.Dockerfile"
    assert "built-by-pxed" in kept.read_text()
    await assert_nothing_left(builder, engine_state, before)


@pytest_twisted.ensureDeferred
async def test_tar_and_initramfs_formats_and_raw_body(builder, engine_state):
    dockerfile = "FROM pxed-test-busybox:latest\nRUN echo x > /x\n"
    r = await builder.admin.request(
        "POST",
        f"/image/{builder.image}/docker?format=tar",
        data=dockerfile.encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert r.code == 202, r.text
    build = await wait_done(builder.admin, r.json()["ID"])
    assert build["State"] == "succeeded", await log_of(builder, build["ID"])
    body = (await builder.admin.get(f"/image/{builder.image}/{build['Version']}")).body
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = {m.name.lstrip("./") for m in tar}
    assert {"x", "bin/busybox", "etc/passwd"} <= names

    build = await wait_done(
        builder.admin, (await submit(builder.admin, builder.image, dockerfile, "initramfs"))["ID"]
    )
    assert build["State"] == "succeeded", await log_of(builder, build["ID"])
    cpio = gzip.decompress(
        (await builder.admin.get(f"/image/{builder.image}/{build['Version']}")).body
    )
    assert cpio.startswith(b"070701") and b"TRAILER!!!" in cpio and b"bin/busybox" in cpio


@pytest_twisted.ensureDeferred
async def test_build_context_archive(builder):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"from the context\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    answer = await submit(
        builder.admin,
        builder.image,
        "FROM pxed-test-busybox:latest\nCOPY hello.txt /hello.txt\n",
        "tar",
        context=buf.getvalue(),
    )
    build = await wait_done(builder.admin, answer["ID"])
    assert build["State"] == "succeeded", await log_of(builder, answer["ID"])
    body = (await builder.admin.get(f"/image/{builder.image}/{build['Version']}")).body
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        member = next(m for m in tar if m.name.lstrip("./") == "hello.txt")
        assert tar.extractfile(member).read() == b"from the context\n"


@pytest.mark.parametrize(
    ("dockerfile", "words"),
    [
        ("FROM pxed-test-busybox:latest\nRUN echo before && false\n", "non-zero code"),
        ("FROMM pxed-test-busybox:latest\n", "unknown instruction"),
        ("FROM scratch\nLABEL empty=yes\n", "empty"),
    ],
    ids=["failing-run-step", "syntax-error", "empty-filesystem"],
)
@pytest_twisted.ensureDeferred
async def test_failed_builds_make_no_version_and_leave_nothing(
    builder, engine_state, dockerfile, words
):
    before = engine_state[1]()
    build = await wait_done(
        builder.admin, (await submit(builder.admin, builder.image, dockerfile))["ID"]
    )
    assert build["State"] == "failed"
    assert (
        words in build["Message"].lower() or words in (await log_of(builder, build["ID"])).lower()
    )
    assert build["Version"] is None
    versions = (await builder.admin.get(f"/image/{builder.image}")).json()["Versions"]
    assert [v["Version"] for v in versions] == [0]
    await assert_nothing_left(builder, engine_state, before)


@pytest_twisted.ensureDeferred
async def test_cancel_a_running_build(builder, engine_state):
    before = engine_state[1]()
    answer = await submit(
        builder.admin, builder.image, "FROM pxed-test-busybox:latest\nRUN sleep 120\n"
    )
    for _ in range(200):
        if "Running in" in await log_of(builder, answer["ID"], follow=False):
            break
        await task.deferLater(reactor, 0.1, lambda: None)
    r = await builder.admin.delete(f"/build/{answer['ID']}")
    assert r.code == 200
    build = await wait_done(builder.admin, answer["ID"], timeout=60)
    assert build["State"] == "cancelled"
    assert (await builder.admin.delete(f"/build/{answer['ID']}")).code == 409
    await assert_nothing_left(builder, engine_state, before)


@pytest_twisted.ensureDeferred
async def test_timeout_kills_the_build(start_server, docker_host, base_image, engine_state):
    server = await start_server(docker_host=docker_host, build_timeout=3)
    image = await new_image(server.admin, "b")
    before = engine_state[1]()
    build = await wait_done(
        server.admin,
        (await submit(server.admin, image, "FROM pxed-test-busybox:latest\nRUN sleep 120\n"))["ID"],
        timeout=60,
    )
    assert build["State"] == "failed"
    assert "timed out" in build["Message"]
    await assert_nothing_left(server, engine_state, before)


@pytest_twisted.ensureDeferred
async def test_fifo_queue_beyond_the_concurrency_limit(builder):
    first = await submit(
        builder.admin, builder.image, "FROM pxed-test-busybox:latest\nRUN sleep 2\n", "tar"
    )
    second = await submit(
        builder.admin, builder.image, "FROM pxed-test-busybox:latest\nRUN echo 2 > /2\n", "tar"
    )
    assert (await builder.admin.get(f"/build/{second['ID']}")).json()["State"] == "queued"
    listed = (await builder.admin.get(f"/image/{builder.image}/builds")).json()
    assert [b["ID"] for b in listed] == [first["ID"], second["ID"]]
    one = await wait_done(builder.admin, first["ID"])
    two = await wait_done(builder.admin, second["ID"])
    assert (one["Version"], two["Version"]) == (1, 2)
    assert two["StartedAt"] >= one["FinishedAt"]


@pytest_twisted.ensureDeferred
async def test_log_follows_a_running_build(builder):
    answer = await submit(
        builder.admin,
        builder.image,
        "FROM pxed-test-busybox:latest\nRUN echo one && sleep 2 && echo two\n",
        "tar",
    )
    log = await log_of(builder, answer["ID"])  # returns when the build ends
    assert "one" in log and "two" in log and "committed version 1" in log
    assert (await builder.admin.get(f"/build/{answer['ID']}")).json()["State"] == "succeeded"


@pytest_twisted.ensureDeferred
async def test_builds_left_running_by_a_stopped_daemon_fail_at_start(start_server, tmp_path):
    from pxed.db import builds

    data = tmp_path / "restart"
    server = await start_server(data_dir=str(data))
    image = await new_image(server.admin, "b")
    build = await server.db.run(
        builds.thd_create, image, "admin", "disk", "FROM scratch\n", False, "admin"
    )
    await server.db.run(builds.thd_next_queued)  # as if it was running
    await server.pxed.service.stopService()
    again = await start_server(data_dir=str(data))
    for _ in range(100):
        state = (await again.admin.get(f"/build/{build.id}")).json()
        if state["State"] != "running":
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    assert state["State"] == "failed"
    assert "pxed stopped" in state["Message"]


@pytest_twisted.ensureDeferred
async def test_unreachable_engine_is_503_and_queues_nothing(start_server):
    server = await start_server(docker_host="unix:///nonexistent/docker.sock")
    image = await new_image(server.admin, "b")
    r = await server.admin.request(
        "POST",
        f"/image/{image}/docker",
        data=b"FROM scratch\n",
        headers={"Content-Type": "text/plain"},
    )
    assert r.code == 503
    assert "Docker engine" in r.json()["error"]
    assert (await server.admin.get(f"/image/{image}/builds")).json() == []


@pytest_twisted.ensureDeferred
async def test_bad_submissions(builder):
    url = f"/image/{builder.image}/docker"
    r = await builder.admin.request(
        "POST", url, data=b"  \n", headers={"Content-Type": "text/plain"}
    )
    assert r.code == 400
    r = await builder.admin.request(
        "POST", url + "?format=iso", data=b"FROM scratch\n", headers={"Content-Type": "text/plain"}
    )
    assert r.code == 400
    assert (await builder.admin.get(f"{url.rsplit('/', 1)[0]}/builds")).json() == []
    alice = await builder.user("alice")
    assert (await alice.request("POST", url, data=b"FROM scratch\n")).code == 403
