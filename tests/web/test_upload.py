"""Streaming uploads and downloads of image versions."""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import json
import os
import random
import subprocess
import threading
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from pxed.storage import Storage
from pxed.web.staging import SLICE, StagedUpload
from pxed.workers import IOPool, PoolStopped
from tests.helpers import MIB, OCTETS, eventually, missing, new_image


def payload(size: int = 8 * MIB, seed: int = 1) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


def staging(server) -> list[str]:
    return os.listdir(server.config.data_dir / "images" / ".staging")


@pytest_twisted.ensureDeferred
async def test_raw_upload_then_download_byte_for_byte(server):
    image = await new_image(server.admin)
    data = payload()
    r = await server.admin.request("POST", f"/image/{image}", data=data, headers=OCTETS)
    assert r.code == 200, r.text
    assert r.text.strip() == "Successfully uploaded image: 1"
    v1 = (await server.admin.get(f"/image/{image}")).json()["Versions"][1]
    assert (v1["Version"], v1["Size"], v1["Origin"]) == (1, len(data), "upload")
    assert v1["Sha256"] == hashlib.sha256(data).hexdigest()

    r = await server.admin.get(f"/image/{image}/1")
    assert r.code == 200
    assert r.body == data
    assert r.length == len(data)
    assert r.header("content-disposition") == f"attachment; filename={image}-1.img"
    assert r.header("etag") == f'"{v1["Sha256"]}"'
    for method in ("GET", "POST"):  # the original registered latest as POST
        r = await server.admin.request(method, f"/image/{image}/latest")
        assert r.code == 200 and r.body == data
    assert staging(server) == []


@pytest_twisted.ensureDeferred
async def test_multipart_upload_as_in_the_seed(server):
    image = await new_image(server.admin)
    data = payload(3 * MIB + 17, seed=2)
    boundary = "----pxedtestboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.img"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = await server.admin.request(
        "POST",
        f"/image/{image}",
        data=body,
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Accept": "application/json",
        },
    )
    assert r.code == 200, r.text
    assert r.json()["Version"] == 1
    assert r.json()["Sha256"] == hashlib.sha256(data).hexdigest()
    assert (await server.admin.get(f"/image/{image}/1")).body == data


@pytest_twisted.ensureDeferred
async def test_multipart_upload_with_curl_as_in_the_seed(server, tmp_path):
    image = await new_image(server.admin)
    data = payload(6 * MIB, seed=3)
    src = tmp_path / "disk.img"
    src.write_bytes(data)
    token = server.admin.headers["Authorization"]
    out = await threads.deferToThread(
        subprocess.run,
        [
            "curl",
            "-sS",
            "-X",
            "POST",
            "-H",
            f"Authorization: {token}",
            "-H",
            "Content-Type: multipart/form-data",
            "-F",
            f"file=@{src}",
            f"{server.url}/image/{image}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Successfully uploaded image: 1"
    assert (await server.admin.get(f"/image/{image}/1")).body == data


@pytest_twisted.ensureDeferred
async def test_digest_mismatch_is_400_and_stores_nothing(server):
    image = await new_image(server.admin)
    data = payload(2 * MIB)
    wrong = hashlib.sha256(b"something else").digest()
    for headers in (
        {"X-Checksum-Sha256": wrong.hex()},
        {"Content-Digest": f"sha-256=:{base64.b64encode(wrong).decode()}:"},
    ):
        r = await server.admin.request(
            "POST", f"/image/{image}", data=data, headers={**OCTETS, **headers}
        )
        assert r.code == 400, r.text
        assert "sha256 mismatch" in r.json()["error"]
    right = hashlib.sha256(data).digest()
    r = await server.admin.request(
        "POST",
        f"/image/{image}",
        data=data,
        headers={**OCTETS, "Content-Digest": f"sha-256=:{base64.b64encode(right).decode()}:"},
    )
    assert r.code == 200
    versions = (await server.admin.get(f"/image/{image}")).json()["Versions"]
    assert [v["Version"] for v in versions] == [0, 1]
    await eventually(lambda: staging(server) == [])
    assert sorted(os.listdir(server.config.data_dir / "images" / image)) == [
        "0.img",
        "1.img",
    ]


@pytest_twisted.ensureDeferred
async def test_replace_latest_with_baas_header(server):
    image = await new_image(server.admin)
    url = f"/image/{image}"
    await server.admin.request("POST", url, data=payload(MIB, 1), headers=OCTETS)
    second = payload(MIB, 2)
    r = await server.admin.request(
        "POST", url, data=second, headers={**OCTETS, "X-BAAS-NewVersion": "false"}
    )
    assert r.text.strip() == "Successfully uploaded image: 1"
    versions = (await server.admin.get(url)).json()["Versions"]
    assert [v["Version"] for v in versions] == [0, 1]
    assert versions[1]["Sha256"] == hashlib.sha256(second).hexdigest()
    assert (await server.admin.get(f"{url}/1")).body == second


@pytest_twisted.ensureDeferred
async def test_not_an_upload(server):
    image = await new_image(server.admin)
    r = await server.admin.post(f"/image/{image}", {"not": "a file"})
    assert r.code == 415
    r = await server.admin.request(
        "POST",
        f"/image/{image}",
        data=b"--x\r\n\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert r.code == 400
    r = await server.admin.request("POST", "/image/no-such-image", data=b"x", headers=OCTETS)
    assert r.code == 404
    assert len((await server.admin.get(f"/image/{image}")).json()["Versions"]) == 1
    await eventually(lambda: staging(server) == [])


@pytest_twisted.ensureDeferred
async def test_range_head_and_conditionals(server):
    image = await new_image(server.admin)
    data = payload(2 * MIB)
    await server.admin.request("POST", f"/image/{image}", data=data, headers=OCTETS)
    url = f"/image/{image}/1"
    etag = f'"{hashlib.sha256(data).hexdigest()}"'

    r = await server.admin.get(url, headers={"Range": "bytes=1048576-"})
    assert r.code == 206 and r.body == data[MIB:]
    r = await server.admin.get(url, headers={"Range": "bytes=0-99", "If-Range": etag})
    assert r.code == 206 and r.body == data[:100]
    r = await server.admin.get(url, headers={"Range": "bytes=0-99", "If-Range": '"stale"'})
    assert r.code == 200 and r.body == data
    r = await server.admin.get(url, headers={"If-None-Match": etag})
    assert r.code == 304 and r.body == b""
    r = await server.admin.request("HEAD", url)
    assert r.code == 200 and r.body == b""
    head = await server.admin.head_headers(url)
    assert head["status"] == "200"
    assert head["content-length"] == str(len(data))
    assert head["etag"] == etag
    assert (await server.admin.get(f"/image/{image}/7")).code == 404
    assert (await server.admin.get(f"/image/{image}/x")).code == 404


class _Partial(Protocol):
    def __init__(self, head: bytes, body: bytes) -> None:
        self.head, self.body = head, body

    def connectionMade(self) -> None:
        self.transport.write(self.head + self.body)


@pytest_twisted.ensureDeferred
async def test_aborted_upload_leaves_no_version_and_no_file(server):
    image = await new_image(server.admin)
    token = server.admin.headers["Authorization"]
    port = int(server.url.rsplit(":", 1)[1])
    head = (
        f"POST /image/{image} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {64 * MIB}\r\n\r\n"
    ).encode()
    proto = await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port), _Partial(head, payload(5 * MIB))
    )
    await eventually(lambda: len(staging(server)) == 1)
    proto.transport.abortConnection()
    await eventually(lambda: staging(server) == [])
    versions = (await server.admin.get(f"/image/{image}")).json()["Versions"]
    assert [v["Version"] for v in versions] == [0]
    assert os.listdir(server.config.data_dir / "images" / image) == ["0.img"]


@pytest_twisted.ensureDeferred
async def test_staging_leftovers_removed_at_start(start_server, tmp_path):
    data_dir = tmp_path / "d"
    (data_dir / "images" / ".staging").mkdir(parents=True)
    (data_dir / "images" / ".staging" / "upload-crashed").write_bytes(b"half")
    server = await start_server(data_dir=str(data_dir))
    assert staging(server) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MiB tmpfs, so the disk fills up during an upload."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        missing(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest_twisted.ensureDeferred
async def test_full_disk_is_507_and_leaves_nothing(start_server, small_disk, tmp_path, database):
    # The images fill the small disk; the database lives elsewhere (as
    # PostgreSQL's always does).
    elsewhere = {"database": f"sqlite:///{tmp_path / 'db.sqlite'}"} if database == "sqlite" else {}
    server = await start_server(data_dir=str(small_disk), **elsewhere)
    image = await new_image(server.admin)
    r = await server.admin.request(
        "POST", f"/image/{image}", data=payload(64 * MIB), headers=OCTETS
    )
    assert r.code == 507, r.text
    assert "space" in r.json()["error"]
    await eventually(lambda: staging(server) == [])
    versions = (await server.admin.get(f"/image/{image}")).json()["Versions"]
    assert [v["Version"] for v in versions] == [0]
    # Once the upload is gone there is room again.
    r = await server.admin.request("POST", f"/image/{image}", data=payload(MIB), headers=OCTETS)
    assert r.code == 200


@pytest_twisted.ensureDeferred
async def test_anonymous_upload_is_401_and_never_reaches_the_disk(server):
    image = await new_image(server.admin)
    r = await server.anonymous.request(
        "POST", f"/image/{image}", data=payload(4 * MIB), headers=OCTETS
    )
    assert r.code == 401
    assert staging(server) == []
    assert len((await server.admin.get(f"/image/{image}")).json()["Versions"]) == 1


class _ReadSome(Protocol):
    """Asks for a download, reads a little of it, then hangs up."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = 0

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > MIB:
            self.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_large_download_and_a_client_that_hangs_up(server):
    image = await new_image(server.admin)
    data = payload(48 * MIB, seed=7)
    await server.admin.request("POST", f"/image/{image}", data=data, headers=OCTETS)
    token = server.admin.headers["Authorization"]
    port = int(server.url.rsplit(":", 1)[1])
    request = (
        f"GET /image/{image}/1 HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\r\n"
    ).encode()
    proto = await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port), _ReadSome(request)
    )
    await eventually(lambda: proto.received > MIB)
    # The server goes on serving after the hang-up, whole and in ranges.
    r = await server.admin.get(f"/image/{image}/1")
    assert r.code == 200 and r.body == data
    r = await server.admin.get(
        f"/image/{image}/1", headers={"Range": f"bytes={20 * MIB}-{30 * MIB - 1}"}
    )
    assert r.code == 206 and r.body == data[20 * MIB : 30 * MIB]


# -- the pool the uploads run on ----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pool_stop_waits_for_work_and_its_chain_without_blocking_the_reactor():
    pool = IOPool(reactor, threads=1)
    pool.startService()
    gate = threading.Event()
    done: list[int] = []

    def first() -> None:
        gate.wait(10)
        done.append(1)

    chained = pool.run(first).addCallback(lambda _: pool.run(done.append, 2))
    stopped = pool.stopService()
    # The reactor goes on (a blocking join would hold it here).
    await task.deferLater(reactor, 0.05, lambda: None)
    assert not stopped.called and done == []
    gate.set()
    await stopped
    assert done == [1, 2] and chained.called
    # A stopped Twisted ThreadPool drops work silently; run() says so.
    with pytest.raises(PoolStopped):
        await pool.run(done.append, 3)


@pytest.fixture
def storage(tmp_path) -> Storage:
    s = Storage(tmp_path)
    s.prepare()
    return s


@pytest_twisted.async_yield_fixture
async def pool():
    p = IOPool(reactor, threads=2)
    p.startService()
    yield p
    if p.running:
        await p.stopService()


@pytest_twisted.ensureDeferred
async def test_staged_upload_writes_and_hashes_in_order(storage, pool):
    pressure: list[bool] = []
    upload = StagedUpload(storage, pool, pressure.append)
    data = payload(24 * MIB + 333, seed=9)
    rnd = random.Random(4)
    at = 0
    while at < len(data):  # pieces of all sizes, as sockets deliver them
        n = rnd.choice((1, 17, 4096, 65536, 300_000, MIB + 5))
        upload.write(data[at : at + n])
        at += n
        if rnd.random() < 0.1:  # the reactor goes on between reads
            await task.deferLater(reactor, 0, lambda: None)
    staged = await upload.finish()
    assert staged.size == len(data)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.path.read_bytes() == data
    if pressure:  # the socket is never left paused
        assert pressure[-1] is False
    upload.close()
    await eventually(lambda: not staged.path.exists())


@pytest_twisted.ensureDeferred
async def test_a_fast_upload_makes_way_for_other_pool_work(storage):
    pool = IOPool(reactor, threads=1)
    pool.startService()
    try:
        gate = threading.Event()
        blocker = pool.run(gate.wait, 10)  # the thread busy: 40 chunks queue up
        upload = StagedUpload(storage, pool, lambda behind: None)
        for _ in range(40):  # as if the client never paused
            upload.write(payload(MIB))
        other = pool.run(lambda: os.fstat(upload._fd).st_size)
        gate.set()
        await blocker
        # The other work ran after one slice of the upload, not all of it.
        assert await other == SLICE * MIB
        staged = await upload.finish()
        assert staged.size == 40 * MIB
        assert staged.sha256 == hashlib.sha256(payload(MIB) * 40).hexdigest()
        upload.close()
    finally:
        await pool.stopService()


@pytest_twisted.ensureDeferred
async def test_upload_arriving_at_shutdown_stops_and_is_removed(storage, pool):
    upload = StagedUpload(storage, pool, lambda behind: None)
    upload.write(payload(3 * MIB))
    stopped = pool.stopService()
    upload.write(payload(2 * MIB, seed=2))  # still arriving: not written
    await stopped
    assert upload.error is not None and upload.error.errno == errno.ESHUTDOWN
    with pytest.raises(OSError):
        await upload.finish()
    # The connection closes after the pools have stopped: removed anyway.
    upload.close()
    assert not upload.path.exists()
    assert os.listdir(storage.staging) == []


@pytest_twisted.ensureDeferred
async def test_a_body_complete_at_shutdown_is_still_finished(storage, pool):
    upload = StagedUpload(storage, pool, lambda behind: None)
    data = payload(MIB + 100)
    upload.write(data)  # one chunk handed over, 100 bytes still buffered
    stopped = pool.stopService()
    staged = await upload.finish()  # the body is all there: written out
    assert staged.path.read_bytes() == data
    upload.close()
    await stopped
    assert os.listdir(storage.staging) == []


# -- multipart framing as the original management OS sends it ---------------

GO_BOUNDARY = "ProfessorDrIngJanRellermeyer"


def go_file_part(data: bytes) -> bytes:
    """The original client's upload up to the file data's end."""
    return (
        f'--{GO_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="image.img"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data


def post_chunked(url: str, token: str, body: bytes) -> tuple[int, bytes]:
    """*body* POSTed multipart with chunked transfer encoding, 64 KiB
    chunks (blocking: run it in a thread)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request(
            "POST",
            parts.path,
            body=(body[i : i + 65536] for i in range(0, len(body), 65536)),
            headers={
                "Authorization": token,
                "Content-Type": f"multipart/form-data; boundary={GO_BOUNDARY}",
                "Accept": "application/json",
            },
            encode_chunked=True,
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_multipart_ending_at_a_boundary_without_closing_dashes(server):
    # The original client: "\r\n--BOUNDARY\r\n", then EOF, chunked.
    image = await new_image(server.admin)
    data = payload(2 * MIB + 5, seed=4)
    body = go_file_part(data) + f"\r\n--{GO_BOUNDARY}\r\n".encode()
    token = server.admin.headers["Authorization"]
    code, answer = await threads.deferToThread(
        post_chunked, f"{server.url}/image/{image}", token, body
    )
    assert code == 200, answer
    assert json.loads(answer)["Sha256"] == hashlib.sha256(data).hexdigest()
    assert (await server.admin.get(f"/image/{image}/1")).body == data


@pytest_twisted.ensureDeferred
async def test_multipart_cut_off_before_or_inside_the_boundary_is_400(server):
    image = await new_image(server.admin)
    data = payload(MIB, seed=5)
    token = server.admin.headers["Authorization"]
    end = f"\r\n--{GO_BOUNDARY}\r\n".encode()
    for body in (
        go_file_part(data),  # cut off inside the file data
        go_file_part(data) + end[:-1],  # the boundary line unfinished
        go_file_part(data) + end + b"Content-Dis",  # a next part begun
        go_file_part(data) + end + b"\r\n",  # a next part with no headers
    ):
        code, answer = await threads.deferToThread(
            post_chunked, f"{server.url}/image/{image}", token, body
        )
        assert code == 400, (body[-20:], answer)
        assert json.loads(answer)["error"] == "multipart body ended early"
    assert len((await server.admin.get(f"/image/{image}")).json()["Versions"]) == 1
    await eventually(lambda: staging(server) == [])
