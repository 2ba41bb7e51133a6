"""CORS: configured origins get credentials; others get nothing."""

from __future__ import annotations

import pytest_twisted

UI = "https://ui.example"


@pytest_twisted.ensureDeferred
async def test_preflight_and_simple_requests(start_server):
    server = await start_server(cors_origins=[UI])
    r = await server.anonymous.request(
        "OPTIONS",
        "/machines",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
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
    r = await server.anonymous.request(
        "OPTIONS",
        "/machines",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"},
    )
    assert r.code == 403
    assert r.header("access-control-allow-origin") is None
    r = await server.admin.get("/machines", headers={"Origin": "https://evil.example"})
    assert r.header("access-control-allow-origin") is None
    assert r.header("access-control-allow-credentials") is None


@pytest_twisted.ensureDeferred
async def test_no_origins_configured(server):
    r = await server.admin.get("/machines", headers={"Origin": UI})
    assert r.header("access-control-allow-origin") is None
