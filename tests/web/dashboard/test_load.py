"""The machines and images pages with 1,000 of each: one request per list,
every row shown.  How long each page took, from navigation start to the
page's own "rendered" mark (performance.mark after its table is in the
DOM), is recorded in the test's output (load-times.json in its tmp_path,
and printed), not asserted: no timed assertions."""

from __future__ import annotations

import hashlib
import json

import pytest_twisted

from pxed.db import images, machines
from tests.helpers import only_on
from tests.web.dashboard.conftest import in_browser

pytestmark = only_on("sqlite", "the browser is tested here, not the database")

COUNT = 1000
LOADS = 3  # each page loaded this many times; every figure is recorded


def thd_fill(conn) -> None:
    """1,000 machines and 1,000 images of admin's, as rows (their files are
    not needed to list them), in one transaction."""
    for i in range(COUNT):
        mac = f"52:54:01:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
        fields = machines.MachineFields(name=f"node-{i:04d}", macs=(mac,))
        disk = images.VersionFile(images.new_uuid(), 0, 64 << 20, "0" * 64, "v0")
        machines.thd_create(conn, fields, "admin", disk)
        sha256 = hashlib.sha256(str(i).encode()).hexdigest()
        disk = images.VersionFile(images.new_uuid(), 0, (i + 1) << 20, sha256, "v0")
        images.thd_create(
            conn, "admin", images.ImageFields(name=f"image-{i:04d}", size=1 << 30), disk, "admin"
        )


@pytest_twisted.ensureDeferred
async def test_a_thousand_machines_and_images(dashboard, server, tmp_path):
    await server.db.run(thd_fill)

    def steps() -> dict:
        d = dashboard
        d.sign_in()
        times: dict[str, list[float]] = {}
        for route, mark, rows, name in (
            ("machines", "pxed-rendered-machines", "#machine-rows tr", "node-"),
            ("images", "pxed-rendered-images", "#image-rows tr", "image-"),
        ):
            for _ in range(LOADS):
                d.open(route)
                d.until(
                    lambda mark=mark: d.js(
                        "return performance.getEntriesByName(arguments[0]).length", mark
                    ),
                    what=f"the {route} page rendered",
                )
                shown = d.js(
                    "return [...document.querySelectorAll(arguments[0])]"
                    ".map(r => r.cells[0].textContent)",
                    rows,
                )
                assert sorted(shown) == [f"{name}{i:04d}" for i in range(COUNT)]
                elapsed = d.js(
                    "return performance.getEntriesByName(arguments[0])[0].startTime", mark
                )
                times.setdefault(route, []).append(round(elapsed, 1))
            d.screenshot(f"{route}-{COUNT}")
        return times

    times = await in_browser(steps)
    report = {
        "what": f"ms from navigation start to the page's rendered mark, {COUNT} rows",
        **times,
    }
    (tmp_path / "load-times.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"\ndashboard load times: {json.dumps(report)}")
