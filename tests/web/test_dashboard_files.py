"""The dashboard's files (pxed/web/dashboard.py) over HTTP: the page at /,
its assets under /ui/, each with the strict CSP and the other browser
headers; JSON errors like the rest of the API.  The dashboard itself is
tested in a browser (tests/web/dashboard/)."""

from __future__ import annotations

import re

import pytest_twisted

from pxed.web.dashboard import CSP, FILES

SECURITY = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_secured(r) -> None:
    for name, value in SECURITY.items():
        assert r.header(name) == value, name


@pytest_twisted.ensureDeferred
async def test_the_page_and_its_files_carry_the_strict_policy(server):
    r = await server.anonymous.get("/")
    assert r.code == 200
    assert r.header("content-type") == "text/html; charset=utf-8"
    assert_secured(r)
    page = r.text
    # Nothing inline for the policy to refuse.
    assert "style=" not in page and "<style" not in page
    assert re.findall(r"<script[^>]*>", page) == ['<script type="module" src="/ui/js/main.js">']
    types = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
    for path in sorted(FILES.rglob("*.*")):
        name = path.relative_to(FILES).as_posix()
        r = await server.anonymous.get(f"/ui/{name}")
        assert r.code == 200, name
        assert_secured(r)
        assert r.body == path.read_bytes()
        if path.suffix[1:] in types:
            assert r.header("content-type") == types[path.suffix[1:]], name
        assert r.header("last-modified"), name
        if path.suffix == ".js":
            text = path.read_text()
            assert "localStorage" not in text and "sessionStorage" not in text, name
            assert "innerHTML" not in text or name == "js/dom.js", f"{name}: use dom.show"
    assert (await server.anonymous.request("HEAD", "/")).code == 200


@pytest_twisted.ensureDeferred
async def test_missing_files_are_json_404s(server):
    for path in ("/ui/nope.js", "/ui/", "/ui/js/", "/ui/../pxed.toml", "/ui/js/%00.js"):
        r = await server.anonymous.get(path)
        assert r.code == 404, path
        assert "error" in r.json(), path
        assert b"Traceback" not in r.body
    r = await server.anonymous.post("/", {})
    assert r.code == 405
