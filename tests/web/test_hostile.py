"""Hostile input: every malformed request gets a 4xx JSON ``{"error"}``
(or, on the boot routes, their own "no work" answer), never a 500, and
nothing it does puts a traceback in the log or the body."""

from __future__ import annotations

import json

import pytest_twisted

from tests.helpers import MAC, Response, add_machine, new_image, send_raw

BIG = 2**63
# Fits SQLite's integers and a 64-bit column, not PostgreSQL's integer (the
# type of every id and version number).
WIDE = 2**31


def _get(path: bytes, headers: bytes = b"", host: bytes = b"x") -> bytes:
    # HTTP/1.0: the answer comes whole, not chunked.
    return b"GET " + path + b" HTTP/1.0\r\nHost: " + host + b"\r\n" + headers + b"\r\n"


def assert_json_4xx(r: Response, logged: list[str], status: int | None = None) -> dict:
    assert 400 <= r.code < 500, (r.code, r.body[:300])
    if status is not None:
        assert r.code == status, (r.code, r.body[:300])
    assert b"Traceback" not in r.body
    assert (r.header("content-type") or "").startswith("application/json"), r.body[:300]
    body = json.loads(r.body)
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    assert not any("Traceback" in line for line in logged), "\n".join(logged)[-3000:]
    return body


# -- JSON bodies ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_deeply_nested_json(server, logged):
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        r = await server.admin.request("POST", "/image", data=body)
        assert_json_4xx(r, logged, 400)
    # Nested within the limits of the parser, but far deeper than any field.
    r = await server.admin.request(
        "POST", "/image", data=b'{"Name":' + b"[" * 500 + b"]" * 500 + b"}"
    )
    assert_json_4xx(r, logged, 400)


@pytest_twisted.ensureDeferred
async def test_integers_beyond_64_bits_in_bodies(server, logged):
    image = (await server.admin.post("/image", {"Name": "d", "Size": 1024 * 1024})).json()["UUID"]
    await add_machine(server)
    for path, body in (
        ("/image", {"Name": "n", "Size": BIG}),
        ("/user/admin/tokens", {"Name": "t", "ExpiresInDays": BIG}),
        ("/user/admin/image_setup", {"Name": "s", "Images": [{"UUID": image, "Version": BIG}]}),
        ("/user/admin/image_setup", {"Name": "s", "Images": [{"UUID": image, "Version": WIDE}]}),
        (f"/machine/{MAC}/boot", {"ImageUUID": image, "Version": WIDE}),
        (
            "/user/admin/image_setup",
            {"Name": "s", "Images": [{"UUID": image, "Version": -BIG - 1}]},
        ),
        ("/image", {"Name": "n", "Size": 10**400}),
    ):
        r = await server.admin.post(path, body)
        assert_json_4xx(r, logged, 400)


# -- path segments and query parameters ------------------------------------------


@pytest_twisted.ensureDeferred
async def test_huge_integers_in_paths(server, logged):
    image = (await server.admin.post("/image", {"Name": "d", "Size": 1024 * 1024})).json()["UUID"]
    for huge in (str(BIG), str(WIDE)):
        for method, path in (
            ("GET", f"/image/{image}/{huge}"),
            ("GET", f"/image/{image}/{'9' * 5000}"),
            ("GET", f"/build/{huge}"),
            ("GET", f"/build/{huge}/log"),
            ("DELETE", f"/build/{huge}"),
            ("DELETE", f"/machine/{MAC}/boot/queue/{huge}"),
            ("DELETE", f"/user/admin/tokens/{huge}"),
        ):
            r = await server.admin.request(method, path)
            # No route matches (werkzeug may say 405 when another method's does).
            assert_json_4xx(r, logged)
            assert r.code in (404, 405), (path, r.code)


@pytest_twisted.ensureDeferred
async def test_nul_in_names_is_4xx(server, logged):
    """PostgreSQL's text cannot hold a NUL (SQLite's can): a name with one,
    in a path, a body or a query, is refused before it reaches a query."""
    image = await new_image(server.admin)
    for method, path, body in (
        ("GET", "/user/a%00b", None),
        ("GET", "/user/admin/images/a%00b", None),
        ("GET", "/user/admin/image_setup/a%00b", None),
        ("GET", "/image/a%00b", None),
        ("POST", "/image", {"Name": "a\x00b", "Size": 1024 * 1024}),
        ("PUT", f"/image/{image}", {"Name": "a\x00b"}),
        ("POST", "/user/admin/tokens", {"Name": "a\x00b"}),
        ("POST", "/user/admin/image_setup", {"Name": "a\x00b", "Images": []}),
        ("POST", "/machine", {"Name": "a\x00b", "MacAddresses": [{"Mac": MAC}]}),
        ("GET", "/events?target=a%00b", None),
        ("GET", "/events?target_type=a%00b", None),
        ("GET", "/user/admin/image_setup?Name=a%00b", None),
    ):
        r = await server.admin.request(method, path, json_body=body)
        assert_json_4xx(r, logged)


@pytest_twisted.ensureDeferred
async def test_hostile_query_parameters(server, logged):
    for query in (
        f"limit={BIG}",
        f"before={BIG}",
        f"before={WIDE}",
        f"before={'9' * 5000}",
        "limit=%ff",
        "target=%ff",
    ):
        r = await server.admin.get("/events?" + query)
        assert_json_4xx(r, logged, 400)
    image = await new_image(server.admin)
    for method, path in (
        ("GET", "/user/admin/image_setup?Name=%ff"),
        ("DELETE", "/user/admin/image_setup/x/images?UUID=%ff"),
        ("POST", f"/image/{image}/docker?format=%ff"),
    ):
        r = await server.admin.request(method, path)
        assert_json_4xx(r, logged, 400)


# -- headers -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_non_utf8_header_values(server, logged):
    image = (await server.admin.post("/image", {"Name": "d", "Size": 1024 * 1024})).json()["UUID"]
    token = server.admin.headers["Authorization"].encode()
    octets = {b"Content-Type": b"application/octet-stream"}
    for headers, path, method, data in (
        ({b"Authorization": b"Bearer \xff\xfe"}, b"/user/me", b"GET", None),
        ({b"Authorization": b"Bearer pxu_\xff"}, b"/user/me", b"GET", None),
        ({b"Authorization": b"\xff"}, b"/image/" + image.encode(), b"POST", b"x"),
        (
            {b"Authorization": token, b"X-Checksum-Sha256": b"\xff" * 64, **octets},
            b"/image/" + image.encode(),
            b"POST",
            b"x",
        ),
        (
            {b"Authorization": token, b"X-BAAS-NewVersion": b"f\xe4lse", **octets},
            b"/image/" + image.encode(),
            b"POST",
            b"x",
        ),
    ):
        r = await server.anonymous.raw(method, path, headers, data)
        assert_json_4xx(r, logged)


@pytest_twisted.ensureDeferred
async def test_requests_the_http_parser_refuses(server, logged):
    """Refused before any route: still an answer, in JSON."""
    r = await send_raw(server.url, _get(b"/user/" + b"a" * 20000))
    assert_json_4xx(r, logged, 414)
    r = await send_raw(server.url, _get(b"/user/me", b"X-Junk: " + b"a" * 20000 + b"\r\n"))
    assert_json_4xx(r, logged, 431)
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(300))
    r = await send_raw(server.url, _get(b"/user/me", many))
    assert_json_4xx(r, logged, 431)
    # A NUL in the request line itself.
    r = await send_raw(server.url, _get(b"/static/a\x00b"))
    assert_json_4xx(r, logged, 400)


# -- paths --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_undecodable_paths(server, logged):
    r = await server.admin.raw(
        b"GET", b"/image/%ff", {b"Authorization": server.admin.headers["Authorization"].encode()}
    )
    assert_json_4xx(r, logged, 404)
    r = await server.anonymous.raw(b"GET", b"/image/%ff")
    assert_json_4xx(r, logged, 401)
    r = await server.anonymous.raw(b"GET", b"/v1/boot/%ff")
    assert_json_4xx(r, logged, 404)
    r = await server.anonymous.raw(b"GET", b"/ipxe/%ff")
    assert r.code == 200 and r.body.startswith(b"#!ipxe") and b"exit" in r.body, r


@pytest_twisted.ensureDeferred
async def test_hosts_that_are_no_host_names(server, logged):
    for host in (b"\xff\xfe", b"a" * 100 + b".example", b"\xc3\xa9.example"):
        r = await send_raw(server.url, _get(b"/user/me", host=host))
        assert_json_4xx(r, logged, 401)
        r = await send_raw(server.url, _get(b"/ipxe", host=host))
        assert r.code == 200 and r.body.startswith(b"#!ipxe"), r
        assert host not in r.body
    assert not any("Traceback" in line for line in logged)


@pytest_twisted.ensureDeferred
async def test_static_paths(server, logged):
    static = server.config.static_path
    static.mkdir(parents=True, exist_ok=True)
    (static / "kernel").write_bytes(b"k")
    r = await server.anonymous.get("/static/kernel")
    assert r.code == 200 and r.body == b"k"
    r = await send_raw(server.url, _get(b"/static/a%00b"))
    assert_json_4xx(r, logged)
    r = await send_raw(server.url, _get(b"/static/%ff"))
    assert_json_4xx(r, logged, 404)
    r = await server.anonymous.get("/static/missing")
    assert_json_4xx(r, logged, 404)
    r = await server.anonymous.get("/static/kernel/deeper")
    assert_json_4xx(r, logged, 404)
    r = await server.anonymous.get("/static/")
    assert_json_4xx(r, logged, 404)


# -- names, redirects, tokens --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_username_with_trailing_newline(server, logged):
    r = await server.admin.post("/user", {"Username": "eve\n"})
    assert_json_4xx(r, logged, 400)
    r = await server.admin.get("/users")
    assert "eve\n" not in [u["Username"] for u in r.json()]


@pytest_twisted.ensureDeferred
async def test_redirect_ignores_a_forged_host(start_server, logged):
    server = await start_server(base_url="https://pxed.example.org/")
    r = await server.admin.get("/user//me", headers={"Host": "evil.example"})
    assert 300 <= r.code < 400, r
    location = r.header("location")
    assert "evil" not in location
    assert location.startswith(("https://pxed.example.org/", "/")), location
    plain = await start_server()
    r = await plain.admin.get("/user//me", headers={"Host": "evil.example"})
    assert 300 <= r.code < 400 and "evil" not in r.header("location"), r.header("location")


@pytest_twisted.ensureDeferred
async def test_a_token_does_not_outlive_the_token_that_made_it(server, logged):
    r = await server.admin.post("/user/admin/tokens", {"Name": "day", "ExpiresInDays": 1})
    assert r.code == 201
    day = r.json()
    day_client = server.anonymous.bearer(day["Token"])
    r = await day_client.post("/user/admin/tokens", {"Name": "child"})
    assert r.code == 201, r.text
    assert r.json()["ExpiresAt"] == day["ExpiresAt"]
    r = await day_client.post("/user/admin/tokens", {"Name": "child", "ExpiresInDays": 30})
    assert r.code == 201, r.text
    assert r.json()["ExpiresAt"] == day["ExpiresAt"]
    # A token without an end makes tokens as asked.
    r = await server.admin.post("/user/admin/tokens", {"Name": "forever"})
    assert r.json()["ExpiresAt"] is None
