"""CORS: configured origins get credentials; others get nothing."""

from __future__ import annotations

import pytest_twisted

UI = "https://ui.example"


async def preflight(server, origin: str, method: str, with_headers: str | None = None):
    """A browser's OPTIONS before a cross-origin *method* on /machines
    (that will send *with_headers*)."""
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if with_headers is not None:
        headers["Access-Control-Request-Headers"] = with_headers
    return await server.anonymous.request("OPTIONS", "/machines", headers=headers)


@pytest_twisted.ensureDeferred
async def test_preflight_and_simple_requests(start_server):
    server = await start_server(cors_origins=[UI])
    r = await preflight(server, UI, "GET", "authorization")
    assert r.code == 204
    assert r.header("access-control-allow-origin") == UI
    assert r.header("access-control-allow-credentials") == "true"
    assert "Authorization" in r.header("access-control-allow-headers")
    assert "DELETE" in r.header("access-control-allow-methods")

    r = await server.admin.get("/machines", headers={"Origin": UI})
    assert r.code == 200
    assert r.header("access-control-allow-origin") == UI
    assert "Origin" in r.header("vary")


@pytest_twisted.ensureDeferred
async def test_other_origins_get_no_cors(start_server):
    server = await start_server(cors_origins=[UI])
    r = await preflight(server, "https://evil.example", "DELETE")
    assert r.code == 403
    assert r.header("access-control-allow-origin") is None
    r = await server.admin.get("/machines", headers={"Origin": "https://evil.example"})
    assert r.header("access-control-allow-origin") is None
    assert r.header("access-control-allow-credentials") is None


@pytest_twisted.ensureDeferred
async def test_no_origins_configured(server):
    r = await server.admin.get("/machines", headers={"Origin": UI})
    assert r.header("access-control-allow-origin") is None
