"""Version files are committed off the database thread: queries go on while
a commit's file work runs, a version whose row cannot be recorded leaves no
file behind, a replacement never destroys the bytes a row names, and what
a crash leaves is removed at startup."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, threads

from pxed import imagestore
from pxed.db import migrate
from pxed.db.pool import make_engine
from pxed.storage import Storage
from tests.helpers import MAC, MIB, OCTETS, WriteLock, add_machine, eventually, new_image


class HeldCommits:
    """Storage.place held on its IO thread until released: a commit that
    takes as long as the test wants, like a multi-GiB fsync."""

    def __init__(self, storage, method: str = "place") -> None:
        self._place = getattr(storage, method)
        self.entered = threading.Event()
        self.release = threading.Event()

    def place(self, *args):
        self.entered.set()
        # Bounded: a test that fails to release does not hang the suite.
        self.release.wait(60)
        return self._place(*args)


async def _entered(held: HeldCommits) -> None:
    ok = await threads.deferToThread(held.entered.wait, 30)
    assert ok, "the upload never reached its commit"


@pytest_twisted.ensureDeferred
async def test_boot_answers_while_an_upload_commits(start_server, monkeypatch):
    server = await start_server(boot_policy="always", base_url="http://pxed.test")
    await add_machine(server)
    image = await new_image(server.admin)
    held = HeldCommits(server.pxed.store.storage)
    monkeypatch.setattr(server.pxed.store.storage, "place", held.place)

    upload = defer.ensureDeferred(
        server.admin.post(f"/image/{image}", data=b"x" * MIB, headers=OCTETS)
    )
    await _entered(held)
    # The commit holds an IO thread; the database thread is free, so the
    # netboot answer (a query and a credential minted) comes back now.
    boot = await server.anonymous.get(f"/v1/boot/{MAC}")
    assert boot.code == 200, boot.text
    assert "pxed.token=" in boot.json()["cmdline"]
    assert not upload.called
    held.release.set()
    r = await upload
    assert r.code == 200, r.text
    versions = (await server.admin.get(f"/image/{image}")).json()["Versions"]
    assert [v["Version"] for v in versions] == [0, 1]


@pytest_twisted.ensureDeferred
async def test_a_version_that_cannot_be_recorded_leaves_no_file(server, monkeypatch):
    image = await new_image(server.admin)
    storage = server.pxed.store.storage
    held = HeldCommits(storage)
    monkeypatch.setattr(storage, "place", held.place)

    upload = defer.ensureDeferred(
        server.admin.post(f"/image/{image}", data=b"y" * MIB, headers=OCTETS)
    )
    await _entered(held)
    # The image goes away while its new version's file is being put in
    # place: recording the row fails, and the file must not stay.
    deleted = await server.admin.delete(f"/image/{image}")
    assert deleted.code == 200, deleted.text
    held.release.set()
    r = await upload
    assert r.code == 404, r.text
    assert not (storage.images / image).exists()
    assert list(storage.staging.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_concurrent_uploads_get_distinct_versions(server):
    image = await new_image(server.admin)
    results = await defer.gatherResults(
        [
            defer.ensureDeferred(
                server.admin.post(f"/image/{image}", data=bytes([i + 1]) * MIB, headers=OCTETS)
            )
            for i in range(4)
        ]
    )
    assert all(r.code == 200 for r in results), [r.text for r in results]
    versions = (await server.admin.get(f"/image/{image}")).json()["Versions"]
    assert sorted(v["Version"] for v in versions) == [0, 1, 2, 3, 4]
    assert len({v["Sha256"] for v in versions}) == 5


def _rows(server) -> list[tuple[str, int, str, str]]:
    """(image, version, sha256, file) of every version, read from the
    server's database directly (a connection of our own)."""
    engine = sa.create_engine(server.config.database_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            query = "SELECT image_uuid, version, sha256, file FROM image_versions"
            return [tuple(r) for r in conn.exec_driver_sql(query)]
    finally:
        engine.dispose()


def assert_no_orphans(server) -> None:
    """Every file under images/ is one a row names (or a build's Dockerfile
    beside it), and the reverse."""
    storage = server.pxed.store.storage
    named = {(image, file) for image, _, _, file in _rows(server)}
    on_disk = {
        (d.name, f.name.replace(".Dockerfile", ".img"))
        for d in storage.images.iterdir()
        if d != storage.staging
        for f in d.iterdir()
    }
    assert on_disk == named


@pytest_twisted.ensureDeferred
async def test_a_replace_the_database_cannot_commit_keeps_the_old_version(server, monkeypatch):
    image = await new_image(server.admin)
    old = b"old bytes " * 100_000
    r = await server.admin.request("POST", f"/image/{image}", data=old, headers=OCTETS)
    assert r.code == 200, r.text

    # Another process takes the write lock once the new bytes are on disk
    # (the file step of a replacement, named place_beside now and replace
    # before) and holds it while the row would be committed: the row cannot
    # change, so the old bytes must stay.
    store = server.pxed.store
    locker = WriteLock(server, "image_versions")
    io_run = store._io.run

    def run(f, *args):
        d = io_run(f, *args)
        if getattr(f, "__name__", "") in ("place_beside", "replace"):
            d.addCallback(lambda result: (locker.take(), result)[1])
        return d

    monkeypatch.setattr(store._io, "run", run)
    try:
        r = await server.admin.request(
            "POST",
            f"/image/{image}",
            data=b"new bytes " * 100_000,
            headers={**OCTETS, "X-BAAS-NewVersion": "false"},
        )
    finally:
        locker.close()
        monkeypatch.undo()
    assert not 200 <= r.code < 300, r.text

    [_, v1] = (await server.admin.get(f"/image/{image}")).json()["Versions"]
    assert v1["Sha256"] == hashlib.sha256(old).hexdigest()
    body = (await server.admin.get(f"/image/{image}/1")).body
    assert hashlib.sha256(body).hexdigest() == v1["Sha256"]
    storage = server.pxed.store.storage
    await eventually(lambda: list(storage.staging.iterdir()) == [])
    assert_no_orphans(server)

    # Once the database is free the same replacement goes through, and
    # the replaced file goes with it.
    new = b"new bytes " * 100_000
    r = await server.admin.request(
        "POST", f"/image/{image}", data=new, headers={**OCTETS, "X-BAAS-NewVersion": "false"}
    )
    assert r.code == 200, r.text
    assert (await server.admin.get(f"/image/{image}/1")).body == new
    [(_, _, sha, file)] = [row for row in _rows(server) if row[1] == 1]
    assert sha == hashlib.sha256(new).hexdigest() and file != "1.img"
    assert_no_orphans(server)


@pytest_twisted.ensureDeferred
async def test_startup_removes_files_no_version_names(server):
    image = await new_image(server.admin)
    storage = server.pxed.store.storage
    kept = storage.images / image / "0.Dockerfile"
    kept.write_text("FROM scratch\n")
    # What a crash between the steps leaves: a new version's file never
    # recorded, a replacement never recorded (or the file it replaced),
    # an image whose row is gone.
    (storage.images / image / "1.img").write_bytes(b"never recorded")
    (storage.images / image / "0-5eb0c0ffee00.img").write_bytes(b"replacement")
    gone = storage.images / "0b8e3a5c-7a43-4a8e-9a0a-3f6c0c1d2e3f"
    gone.mkdir()
    (gone / "0.img").write_bytes(b"deleted image")
    # Not pxed's: left alone.
    (storage.images / "lost+found").mkdir()
    # Older than the grace another server sharing the database would get.
    old = time.time() - 2 * imagestore.SWEEP_GRACE
    for path in (storage.images / image / "1.img", storage.images / image / "0-5eb0c0ffee00.img"):
        os.utime(path, (old, old))
    os.utime(gone / "0.img", (old, old))
    os.utime(gone, (old, old))

    engine = make_engine(server.config.database_url)
    try:
        assert imagestore.sweep(engine, storage) == 3
    finally:
        engine.dispose()
    assert sorted(os.listdir(storage.images / image)) == ["0.Dockerfile", "0.img"]
    assert not gone.exists()
    assert (storage.images / "lost+found").is_dir()
    (storage.images / "lost+found").rmdir()
    assert_no_orphans(server)


def test_sweep_leaves_everything_when_the_database_knows_no_image(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    try:
        migrate.prepare(engine)
        storage = Storage(tmp_path / "data")
        storage.prepare()
        image = storage.images / "0b8e3a5c-7a43-4a8e-9a0a-3f6c0c1d2e3f"
        image.mkdir()
        (image / "0.img").write_bytes(b"someone's image")
        assert imagestore.sweep(engine, storage) == 0
        assert (image / "0.img").exists()
    finally:
        engine.dispose()


@pytest_twisted.ensureDeferred
async def test_a_version_frozen_while_its_replacement_is_put_in_place_stays(server, monkeypatch):
    image = await new_image(server.admin)
    old = b"v1" * 1000
    r = await server.admin.request("POST", f"/image/{image}", data=old, headers=OCTETS)
    assert r.code == 200, r.text
    storage = server.pxed.store.storage
    held = HeldCommits(storage, "place_beside")
    monkeypatch.setattr(storage, "place_beside", held.place)

    replace = defer.ensureDeferred(
        server.admin.request(
            "POST",
            f"/image/{image}",
            data=b"v1 new",
            headers={**OCTETS, "X-BAAS-NewVersion": "false"},
        )
    )
    await _entered(held)
    # A setup freezes version 1 while its replacement is being put in
    # place: the row is checked again when recorded.
    r = await server.admin.post(
        "/user/admin/image_setup", {"Name": "s", "Images": [{"UUID": image, "Version": 1}]}
    )
    assert r.code == 201, r.text
    held.release.set()
    r = await replace
    assert r.code == 409, r.text
    assert (await server.admin.get(f"/image/{image}/1")).body == old
    assert_no_orphans(server)


def test_a_server_clears_only_its_own_staging_files(tmp_path):
    # Servers sharing the data dir: a's start must not remove b's upload in
    # progress; it removes its own leftovers, unnamed ones (from before
    # servers were named) and another's left for over a day.
    a, b = Storage(tmp_path, "a host"), Storage(tmp_path, "b")
    a.prepare()
    paths = []
    for storage in (a, b, b):
        path, fd = storage.new_staging()
        os.close(fd)
        paths.append(path)
    _own, busy, stale = paths
    day_old = time.time() - 25 * 3600
    os.utime(stale, (day_old, day_old))
    unnamed = a.staging / "upload-crashed"
    unnamed.write_bytes(b"half")
    assert a.prepare() == 3
    assert list(a.staging.iterdir()) == [busy]
