"""pxectl images: create, list, show, upload (streamed, with its sha256 and
a progress bar), download (resumed, checked), delete."""

from __future__ import annotations

import hashlib
import os

import pytest_twisted

from tests.cli.conftest import OnPty, screen_lines
from tests.helpers import MIB


@pytest_twisted.ensureDeferred
async def test_create_list_show_delete(server, pxectl):
    created = (await pxectl.ok("images", "create", "debian", "--size", str(MIB), "--json")).json()
    uuid = created["UUID"]
    assert (created["Name"], created["Size"]) == ("debian", MIB)
    plain = (await pxectl.ok("images", "create", "other", "--compression", "zstd")).out.strip()
    listed = (await pxectl.ok("images", "list", "--json")).json()
    assert sorted(i["UUID"] for i in listed) == sorted([uuid, plain])
    assert "debian" in (await pxectl.ok("images", "list")).out
    shown = (await pxectl.ok("images", "show", uuid, "--json")).json()
    assert [v["Version"] for v in shown["Versions"]] == [0]
    assert "Versions:" in (await pxectl.ok("images", "show", uuid)).out
    assert "Deleted" in (await pxectl.ok("images", "delete", uuid)).out
    assert (await pxectl("images", "show", uuid)).code == 4


@pytest_twisted.ensureDeferred
async def test_upload_then_download_resumed_and_checked(server, pxectl, tmp_path):
    uuid = (await pxectl.ok("images", "create", "disk", "--size", str(MIB))).out.strip()
    data = os.urandom(3 * MIB + 123)
    source = tmp_path / "disk.img"
    source.write_bytes(data)
    r = await pxectl.ok("images", "upload", uuid, str(source), "--json")
    version = r.json()
    assert version["Version"] == 1 and version["Sha256"] == hashlib.sha256(data).hexdigest()
    # Not a terminal: the bar's last line only.
    assert r.err.count("\n") == 1 and "100%" in r.err

    target = tmp_path / "out.img"
    r = await pxectl.ok("images", "download", f"{uuid}:1", str(target))
    assert target.read_bytes() == data and "resumed" not in r.out

    # An interrupted download left its first MiB: only the rest is fetched.
    resumed = tmp_path / "again.img"
    (tmp_path / "again.img.part").write_bytes(data[:MIB])
    r = await pxectl.ok("images", "download", uuid, str(resumed))
    assert resumed.read_bytes() == data and "resumed" in r.out
    assert not (tmp_path / "again.img.part").exists()

    # Interrupted after the last byte: nothing more to fetch, only the check.
    (tmp_path / "whole.img.part").write_bytes(data)
    r = await pxectl.ok("images", "download", f"{uuid}:1", str(tmp_path / "whole.img"))
    assert (tmp_path / "whole.img").read_bytes() == data and "resumed" in r.out
    # Longer than the version (another one's leftovers): fetched whole again.
    (tmp_path / "long.img.part").write_bytes(data + b"more")
    r = await pxectl.ok("images", "download", f"{uuid}:1", str(tmp_path / "long.img"))
    assert (tmp_path / "long.img").read_bytes() == data and "resumed" not in r.out

    # A partial file that is not the image's start fails the sha256 check.
    bad = tmp_path / "bad.img"
    (tmp_path / "bad.img.part").write_bytes(b"\0" * MIB)
    r = await pxectl("images", "download", f"{uuid}:1", str(bad))
    assert r.code == 1 and "sha256 mismatch" in r.err
    assert not bad.exists() and not (tmp_path / "bad.img.part").exists()
    assert (await pxectl("images", "download", f"{uuid}:7", str(bad))).code == 4


@pytest_twisted.ensureDeferred
async def test_upload_progress_bar_on_a_terminal(server, pxectl, tmp_path):
    uuid = (await pxectl.ok("images", "create", "disk", "--size", str(MIB))).out.strip()
    source = tmp_path / "big.img"
    source.write_bytes(os.urandom(8 * MIB))
    code, _, shown = await OnPty(["images", "upload", uuid, str(source)], pxectl.env()).finish()
    assert code == 0, shown
    [final] = screen_lines(shown)
    assert final.startswith("upload big.img [" + "#" * 30 + "] 100% 8.0 MiB/8.0 MiB "), final
    assert "/s ETA 0s" in final
    # Redrawn in place as it went, not one line per chunk.
    assert shown.count("\r") >= 2 and shown.count("\n") == 1
