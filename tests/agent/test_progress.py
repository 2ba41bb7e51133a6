"""Progress: while an image is written the agent reports the bytes so far
every 2 s (0 at the start, the whole image once it is verified), which
pxed shows as the machine's Progress."""

from __future__ import annotations

import itertools
import time

import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher

from tests.agent.conftest import data, disk_file
from tests.helpers import MAC, MIB


@pytest_twisted.ensureDeferred
async def test_progress_is_reported_every_two_seconds(machine_with, proxy, tmp_path):
    size = 5 * MIB
    machine, [(uuid, _)] = await machine_with([(data(size, seed=9), "none", False)])
    proxy.rate = 1 * MIB  # bytes per second: a deploy of about 5 s
    disk = disk_file(tmp_path / "disk", 8 * MIB)
    posts: list[float] = []

    def watch(event: dict) -> None:
        if event.get("log_namespace") == "pxed.access" and event.get("method") == "POST":
            if event.get("path") == f"/machine/{MAC}/progress" and event.get("status") == 200:
                posts.append(time.monotonic())

    globalLogPublisher.addObserver(watch)
    seen: list[tuple[int, int]] = []
    try:
        running = defer.ensureDeferred(machine.agent([disk], url=proxy.url))
        while not running.called:
            progress = (await machine.server.admin.get(f"/machine/{MAC}")).json()["Progress"]
            if progress and progress["Image"] == uuid:
                seen.append((progress["ImageWritten"], progress["ImageTotal"]))
            await task.deferLater(reactor, 0.3, lambda: None)
        run = await running
    finally:
        globalLogPublisher.removeObserver(watch)

    assert run.code == 0, run.output
    gaps = [b - a for a, b in itertools.pairwise(posts)]
    # The first report (0) at the start, then every 2 s, then the last.
    assert len(posts) >= 4, posts
    assert all(g < 2.6 for g in gaps), gaps
    assert sum(1 for g in gaps if 1.6 < g) >= 2, gaps
    written = [w for w, total in seen if total == size]
    assert written[0] < size and any(0 < w < size for w in written), seen
    assert written == sorted(written), "never backwards"
    events = (await machine.server.admin.get(f"/machine/{MAC}/events")).json()
    [image_written] = [e for e in events if e["Action"] == "work.image-written"]
    assert f"{size} bytes in" in image_written["Detail"]
