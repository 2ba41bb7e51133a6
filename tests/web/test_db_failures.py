"""When the database or the disk fails: a full data dir and a database whose
write lock another process holds.  Reads (credentials included) go on,
writes fail with 507 or 503 + Retry-After, never 500, and /healthz says
"busy" at once (issue 11, items 9 and 10).

On both databases.  PostgreSQL's lock is a table's (another connection's
EXCLUSIVE lock on ``machines``): writes to it wait and fail busy, reads and
other writes go on.  In the full-disk test only the data dir is full on
PostgreSQL (the cluster keeps its files elsewhere); a full disk under
PostgreSQL's own files is a test of its own (a tablespace on a tmpfs)."""

from __future__ import annotations

import errno
import os
import pwd
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor, task
from twisted.internet.defer import ensureDeferred

from tests.helpers import (
    MAC,
    MIB,
    WriteLock,
    add_machine,
    missing,
    new_image,
    only_on,
    upload,
    upload_version,
)


def mount_tmpfs(mnt: Path) -> None:
    """An 8 MiB tmpfs of its own at *mnt*, to fill up (needs root)."""
    if os.geteuid() != 0:
        missing("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        missing(f"cannot mount a tmpfs: {done.stderr.strip()}")


def unmount(mnt: Path) -> None:
    # Lazy: the server (stopped by its own fixture) may still hold files.
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    mount_tmpfs(mnt)
    try:
        yield mnt
    finally:
        unmount(mnt)


def fill(mnt: Path) -> Path:
    """Fill *mnt*'s filesystem to the last byte; the filler's path."""
    filler = mnt / "filler"
    block = b"\0" * (64 * 1024)
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                f.write(block)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
        for size in (4096, 512, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError:
                    break
    assert os.statvfs(mnt).f_bavail == 0
    return filler


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


@pytest_twisted.ensureDeferred
async def test_full_disk_reads_and_deletes_go_on_and_an_upload_is_507(small_disk, start_server):
    server = await start_server(data_dir=str(small_disk / "data"))
    admin = server.admin
    user = await server.user("alice")
    image = await new_image(user, size=MIB)
    await upload_version(user, image, os.urandom(MIB))
    spare = await new_image(user, "spare", size=MIB)
    await upload_version(user, spare, os.urandom(MIB))
    data = Path(server.config.data_dir)
    images_before = files_under(data / "images")
    versions_before = (await user.get(f"/image/{image}")).json()["Versions"]

    fill(small_disk)

    # Credentials are read, not written: every token-authenticated read
    # answers (it answered 500 when each request wrote last_used_at).
    for client in (admin, user, admin, user):
        r = await client.get(f"/image/{image}")
        assert r.code == 200, r.text
        r = await client.get("/user/alice/images")
        assert r.code == 200, r.text
    r = await admin.get("/machines")
    assert r.code == 200, r.text

    # An upload that does not fit: 507, and nothing left behind.
    r = await upload(user, f"/image/{image}", os.urandom(2 * MIB))
    assert r.code == 507, r.text
    assert "error" in r.json()
    # (The partial file goes as the upload fails; allow its removal a moment.)
    for _ in range(100):
        if files_under(data / "images") == images_before:
            break
        await task.deferLater(reactor, 0.05)
    assert files_under(data / "images") == images_before
    r = await user.get(f"/image/{image}")
    assert r.json()["Versions"] == versions_before

    # Deleting an image to make room is a token-authenticated write too,
    # and the image's files go.  SQLite's database is on the full disk
    # with no byte to grow into: it commits in the room its write-ahead
    # log already has.
    r = await user.delete(f"/image/{spare}")
    assert r.code == 200, r.text
    r = await user.get(f"/image/{spare}")
    assert r.code == 404
    assert not (data / "images" / spare).exists()
    assert os.statvfs(small_disk).f_bavail > 0


@only_on("postgresql", "its own files on a full disk; SQLite's file is the data dir's, above")
@pytest_twisted.ensureDeferred
async def test_full_database_disk_write_507_reads_answer(start_server, postgres_cluster):
    """PostgreSQL's files on a full disk: the machines table is moved to a
    tablespace on a small tmpfs, which is then filled.  Adding a machine
    needs a page the disk has no room for (disk_full): 507, not 500; reads
    answer; once there is room again the same write goes through."""
    server = await start_server()
    database = sa.engine.make_url(server.config.database_url).database
    engine = sa.create_engine(
        postgres_cluster.url(database), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )
    # Where the cluster's user can reach it (pytest's tmp dirs are 0700).
    mnt = postgres_cluster.root / "full"
    mnt.mkdir()
    mount_tmpfs(mnt)
    if postgres_cluster.user is not None:
        user = pwd.getpwnam(postgres_cluster.user)
        os.chown(mnt, user.pw_uid, user.pw_gid)
    try:
        with postgres_cluster.admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE TABLESPACE full_disk LOCATION '{mnt}'")
        with engine.connect() as conn:
            # No page at all (a reused database's table keeps the pages of
            # rows deleted): the first row needs a new one.
            conn.exec_driver_sql("TRUNCATE machines CASCADE")
            conn.exec_driver_sql("ALTER TABLE machines SET TABLESPACE full_disk")
        filler = fill(mnt)

        body = {"Name": "n", "MacAddresses": [{"Mac": MAC}]}
        r = await server.admin.post("/machine", body)
        assert r.code == 507, r.text
        assert "error" in r.json()
        r = await server.admin.get("/machines")
        assert r.code == 200, r.text
        assert r.json() == []

        filler.unlink()
        r = await server.admin.post("/machine", body)
        assert r.code == 201, r.text
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql("ALTER TABLE machines SET TABLESPACE pg_default")
        engine.dispose()
        with postgres_cluster.admin.connect() as conn:
            conn.exec_driver_sql("DROP TABLESPACE IF EXISTS full_disk")
        unmount(mnt)


@pytest_twisted.ensureDeferred
async def test_locked_database_healthz_busy_write_503_reads_answer(start_server, database):
    server = await start_server()
    admin = server.admin
    await add_machine(server)
    another = {"Name": "n", "MacAddresses": [{"Mac": "52:54:00:00:00:09"}]}
    holder = WriteLock(server, "machines").take()
    try:
        r = await server.anonymous.get("/healthz")
        if database == "sqlite":
            # SQLite has one write lock, the whole database's: no write of
            # any kind could start, so the server is busy.
            assert r.code == 503, r.text
            assert r.json()["status"] == "busy"
            assert r.header("retry-after") is not None
        else:
            # PostgreSQL's lock is one table's; writes to the others go on.
            assert r.code == 200, r.text
            assert r.json()["status"] == "ok"

        r = await admin.post(
            "/machine", {"Name": "n", "MacAddresses": [{"Mac": "52:54:00:00:00:09"}]}
        )
        assert r.code == 503, r.text
        assert "error" in r.json()
        assert int(r.header("retry-after")) >= 1

        # Reads answer while the lock is still held (it is released below).
        r = await admin.get("/machines")
        assert r.code == 200, r.text
        assert [m["Name"] for m in r.json()] == ["m"]
        r = await admin.get(f"/machine/{MAC}")
        assert r.code == 200, r.text
        r = await server.anonymous.get("/v1/boot/52:54:00:00:00:77")
        assert r.code in (200, 404), r.text
        r = await server.anonymous.get("/ipxe/52:54:00:00:00:77")
        assert r.code == 200, r.text
    finally:
        holder.close()

    r = await server.anonymous.get("/healthz")
    assert r.code == 200, r.text
    assert r.json()["status"] == "ok"
    r = await admin.post("/machine", another)
    assert r.code == 201, r.text


@pytest_twisted.ensureDeferred
async def test_reads_do_not_queue_behind_a_waiting_write(start_server):
    """A write waiting for the lock holds the write thread; reads answer
    before it does (they waited for it before: one thread for both)."""
    server = await start_server(db_busy_timeout=60.0)
    admin = server.admin
    await add_machine(server)
    holder = WriteLock(server, "machines").take()
    order: list[str] = []
    try:
        pending = ensureDeferred(
            admin.post("/machine", {"Name": "n", "MacAddresses": [{"Mac": "52:54:00:00:00:09"}]})
        )
        pending.addCallback(lambda r: order.append("write") or r)
        for path in ("/machines", f"/machine/{MAC}"):
            r = await admin.get(path)
            assert r.code == 200, r.text
            order.append("read")
        r = await server.anonymous.get("/ipxe/52:54:00:00:00:77")
        assert r.code == 200, r.text
        order.append("read")
        assert order == ["read", "read", "read"]
    finally:
        holder.close()
    r = await pending
    assert r.code == 201, r.text
    assert order == ["read", "read", "read", "write"]


@pytest_twisted.ensureDeferred
async def test_token_last_used_at_written_at_most_once_a_minute(server):
    admin = server.admin
    alice = await server.user("alice")

    async def last_used() -> str | None:
        r = await admin.get("/user/alice/tokens")
        return r.json()[0]["LastUsedAt"]

    assert await last_used() is None
    r = await alice.get("/user/alice/images")
    assert r.code == 200
    # Recorded after the answer, in a write of its own: wait for it.
    for _ in range(200):
        first = await last_used()
        if first is not None:
            break
        await task.deferLater(reactor, 0.02)
    assert first is not None
    for _ in range(3):
        r = await alice.get("/user/alice/images")
        assert r.code == 200
    await task.deferLater(reactor, 0.2)
    assert await last_used() == first
