"""/static/: Range, HEAD, If-Modified-Since, If-Range; no listings, no way out."""

from __future__ import annotations

import os

import pytest
import pytest_twisted

CONTENT = bytes(range(256)) * 4096  # 1 MiB


@pytest_twisted.async_yield_fixture
async def static_server(start_server, tmp_path):
    static = tmp_path / "static"
    (static / "mgmtos").mkdir(parents=True)
    (static / "mgmtos" / "vmlinuz").write_bytes(CONTENT)
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", static / "outside-link-target-check")
    yield await start_server(static_dir=str(static))


@pytest_twisted.ensureDeferred
async def test_whole_file_range_and_head(static_server):
    c = static_server.client
    r = await c.get("/static/mgmtos/vmlinuz")
    assert r.code == 200
    assert r.body == CONTENT
    assert r.header("accept-ranges") == "bytes"

    r = await c.get("/static/mgmtos/vmlinuz", headers={"Range": "bytes=1000-1999"})
    assert r.code == 206
    assert r.body == CONTENT[1000:2000]
    assert r.header("content-range") == f"bytes 1000-1999/{len(CONTENT)}"

    r = await c.request("HEAD", "/static/mgmtos/vmlinuz")
    assert r.code == 200
    assert (await c.head_headers("/static/mgmtos/vmlinuz"))["content-length"] == str(len(CONTENT))
    assert r.body == b""


@pytest_twisted.ensureDeferred
async def test_conditional_requests(static_server):
    c = static_server.client
    last_modified = (await c.request("HEAD", "/static/mgmtos/vmlinuz")).header("last-modified")
    r = await c.get("/static/mgmtos/vmlinuz", headers={"If-Modified-Since": last_modified})
    assert r.code == 304
    r = await c.get(
        "/static/mgmtos/vmlinuz", headers={"Range": "bytes=0-9", "If-Range": last_modified}
    )
    assert r.code == 206 and r.body == CONTENT[:10]
    r = await c.get(
        "/static/mgmtos/vmlinuz",
        headers={"Range": "bytes=0-9", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"},
    )
    assert r.code == 200 and r.body == CONTENT, "a stale If-Range gets the whole file"


@pytest_twisted.ensureDeferred
async def test_no_directory_listing(static_server):
    for path in ("/static/", "/static/mgmtos/", "/static/mgmtos"):
        r = await static_server.client.get(path)
        assert b"vmlinuz" not in r.body, path
        assert r.code in (301, 302, 404), (path, r.code)


@pytest.mark.parametrize(
    "path",
    [
        b"/static/../secret.txt",
        b"/static/mgmtos/../../secret.txt",
        b"/static/%2e%2e/secret.txt",
        b"/static/%2E%2E%2Fsecret.txt",
        b"/static/mgmtos%2F..%2F..%2Fsecret.txt",
        b"/static/..%5Csecret.txt",
        b"/static/%2fetc%2fpasswd",
    ],
)
@pytest_twisted.ensureDeferred
async def test_no_path_traversal(static_server, path):
    r = await static_server.client.raw(b"GET", path)
    assert r.code in (308, 400, 404), (path, r.code)
    assert b"top secret" not in r.body
    assert b"root:" not in r.body
