"""Version files are committed off the database thread: queries go on while
a commit's file work runs, and a version whose row cannot be recorded
leaves no file behind."""

from __future__ import annotations

import threading

import pytest_twisted
from twisted.internet import defer, threads

from tests.helpers import MAC, MIB, OCTETS, add_machine, new_image


class HeldCommits:
    """Storage.place held on its IO thread until released: a commit that
    takes as long as the test wants, like a multi-GiB fsync."""

    def __init__(self, storage) -> None:
        self._place = storage.place
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
