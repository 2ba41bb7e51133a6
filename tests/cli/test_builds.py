"""pxectl build: a Dockerfile and a context directory sent, the log
streamed while the server builds (Docker: tests/docker_fixtures.py)."""

from __future__ import annotations

import tarfile

import pytest_twisted

from tests.cli.conftest import Pxectl, token_of
from tests.helpers import new_image


@pytest_twisted.ensureDeferred
async def test_a_refused_build_is_one_line(server, pxectl, tmp_path):
    image = await new_image(server.admin)
    empty = tmp_path / "Dockerfile"
    empty.write_text("\n")
    r = await pxectl("build", image, str(empty))
    assert (r.code, r.err) == (1, "Error: 400 Bad Request: the Dockerfile is empty\n")
    assert (await pxectl("build", image, str(tmp_path / "none"))).code == 2


@pytest_twisted.ensureDeferred
async def test_build_with_context_follows_the_log(start_server, docker_host, base_image, tmp_path):
    server = await start_server(docker_host=docker_host)
    pxectl = Pxectl(server, tmp_path / "config", token_of(server.admin))
    image = await new_image(server.admin, "built")
    context = tmp_path / "context"
    context.mkdir()
    (context / "hello.txt").write_text("from the context\n")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM pxed-test-busybox:latest\nCOPY hello.txt /hello.txt\n")

    r = await pxectl(
        "build", image, str(dockerfile), "--context", str(context), "--format", "tar", "-f"
    )
    assert r.code == 0, r
    assert "COPY hello.txt" in r.out  # the log, as it ran
    assert r.out.splitlines()[-1] == f"Build 1 succeeded: version 1 of {image}"
    target = tmp_path / "built.tar"
    await pxectl.ok("images", "download", f"{image}:1", str(target))
    with tarfile.open(target) as tar:
        member = next(m for m in tar if m.name.lstrip("./") == "hello.txt")
        assert tar.extractfile(member).read() == b"from the context\n"

    dockerfile.write_text("FROM pxed-test-busybox:latest\nRUN echo before && false\n")
    r = await pxectl("build", image, str(dockerfile), "--format", "tar", "-f", "--json")
    assert r.code == 1 and "before" in r.err
    assert r.json()["State"] == "failed"
    assert r.err.splitlines()[-1].startswith("Error: build 2 failed")
    submitted = (await pxectl.ok("build", image, str(dockerfile), "--json")).json()
    assert submitted["State"] in ("queued", "running")
