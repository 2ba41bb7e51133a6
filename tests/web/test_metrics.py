"""GET /metrics: scraped over HTTP from a real server, read with
prometheus_client's own parser, and its counters followed as the server
does things; who may scrape it."""

from __future__ import annotations

import os

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from pxed.db import builds
from tests.helpers import (
    MAC,
    OCTETS,
    OTHER_MAC,
    Client,
    Server,
    add_machine,
    both_databases,
    enqueue,
    new_image,
    send_raw,
    upload,
    upload_version,
    wait_done,
)

Samples = dict[tuple[str, frozenset], float]


async def scrape(client: Client) -> Samples:
    r = await client.get("/metrics")
    assert r.code == 200, r.text
    assert r.header("content-type").startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@both_databases
@pytest_twisted.ensureDeferred
async def test_counters_move_with_what_the_server_does(start_server):
    # No Docker engine there: a build fails at once, and its duration counts.
    server = await start_server(docker_host="unix:///nonexistent/docker.sock")
    admin = server.admin
    me = (await admin.get("/user/me")).json()["Username"]
    image = await new_image(admin)
    await add_machine(server)
    before = await scrape(admin)

    # Requests: a route, a path no route serves, an upload refused before
    # its body (labelled by the route it was sent to).
    assert (await server.anonymous.get("/healthz")).code == 200
    assert (await server.anonymous.get("/no/such/route")).code == 404
    assert (await upload(server.anonymous, f"/image/{image}", b"x" * 100_000)).code == 401
    # ... and one the HTTP parser refuses (a header line too long).
    junk = b"GET /healthz HTTP/1.0\r\nX-Junk: " + b"a" * 20000 + b"\r\n\r\n"
    assert (await send_raw(server.url, junk)).code == 431
    # An upload and a download of its bytes.
    data = os.urandom(300_000)
    version = await upload_version(admin, image, data)
    assert (await admin.get(f"/image/{image}/{version}")).body == data
    # Netboot answers: an unknown MAC, a known machine without work, and
    # with work (which also queues an entry).
    await server.anonymous.get(f"/ipxe/{OTHER_MAC}")
    assert (await server.anonymous.get(f"/v1/boot/{MAC}")).code == 404
    await enqueue(admin, [{"UUID": image}], user=me)
    assert (await server.anonymous.get(f"/v1/boot/{MAC}")).code == 200
    # A build that ends.
    build = await server.db.run(builds.thd_create, image, me, "disk", "FROM scratch\n", False, me)
    server.pxed.builder.kick()
    assert (await wait_done(admin, build.id))["State"] == "failed"

    after = await scrape(admin)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "pxed_http_requests_total"
    assert moved(requests, method="GET", route="/healthz", status="200") == 1
    assert moved(requests, method="GET", route="unmatched", status="404") == 1
    assert moved(requests, method="POST", route="/image/<uuid>", status="401") == 1
    assert moved(requests, method="GET", route="unmatched", status="431") == 1
    assert moved(requests, method="POST", route="/image/<uuid>", status="200") == 1
    assert moved(requests, method="GET", route="/image/<uuid>/<int:version>", status="200") == 1
    duration = "pxed_http_request_duration_seconds_count"
    assert moved(duration, method="GET", route="/healthz") == 1

    assert moved("pxed_boot_answers_total", decision="unknown") == 1
    assert moved("pxed_boot_answers_total", decision="local-disk") == 1
    assert moved("pxed_boot_answers_total", decision="management-os") == 1

    # Only the authenticated upload's body was read.
    assert moved("pxed_upload_bytes_total") == len(data)
    assert moved("pxed_download_bytes_total") == len(data)
    assert moved("pxed_upload_throughput_bytes_per_second_count") == 1
    assert moved("pxed_download_throughput_bytes_per_second_count") == 1
    assert value(after, "pxed_staging_bytes") == 0

    assert moved("pxed_boot_queue_entries", state="queued") == 1
    assert value(after, "pxed_boot_queue_entries", state="done") == 0
    assert moved("pxed_builds", state="failed") == 1
    assert moved("pxed_build_duration_seconds_count", state="failed") == 1

    for pool in ("write", "read"):
        assert moved("pxed_db_wait_seconds_count", pool=pool) > 0
        assert moved("pxed_db_query_seconds_count", pool=pool) > 0
        assert moved("pxed_db_query_seconds_sum", pool=pool) > 0


@pytest_twisted.ensureDeferred
async def test_staging_bytes_count_an_upload_under_way(server: Server):
    image = await new_image(server.admin)
    host, port = server.url.removeprefix("http://").split(":")
    sender = await connectProtocol(TCP4ClientEndpoint(reactor, host, int(port)), Protocol())
    head = [
        f"POST /image/{image} HTTP/1.1",
        f"Host: {host}",
        f"Authorization: {server.admin.headers['Authorization']}",
        f"Content-Type: {OCTETS['Content-Type']}",
        f"Content-Length: {4 * 1024 * 1024}",
    ]
    part = b"y" * 200_000
    sender.transport.write("\r\n".join(head).encode() + b"\r\n\r\n" + part)

    # The part is received, the body not complete.
    assert await staged_until(server, len(part)) == len(part)
    # The client goes away: its staging file is removed, and counted off.
    sender.transport.loseConnection()
    assert await staged_until(server, 0) == 0


async def staged_until(server: Server, expected: float) -> float:
    """pxed_staging_bytes once it is *expected* (or after 10 s of asking)."""
    for _ in range(200):
        staged = value(await scrape(server.admin), "pxed_staging_bytes")
        if staged == expected:
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    return staged


@pytest_twisted.ensureDeferred
async def test_admins_may_scrape_and_so_may_metrics_networks(start_server):
    server = await start_server()
    r = await server.anonymous.get("/metrics")
    assert r.code == 401, r.text
    alice = await server.user("alice")
    assert (await alice.get("/metrics")).code == 403
    assert "pxed_http_requests_total" in (await server.admin.get("/metrics")).text

    # The tests' client connects from 127.0.0.1.
    on = await start_server(metrics_networks=["127.0.0.0/8"])
    await scrape(on.anonymous)
    off = await start_server(metrics_networks=["10.0.0.0/8", "::1/128"])
    assert (await off.anonymous.get("/metrics")).code == 401
    assert (await off.admin.get("/metrics")).code == 200
