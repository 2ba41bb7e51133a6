"""A build from a Dockerfile in the dashboard: started from the image's
page, its log read as it streams, the version it makes listed (a real
Docker engine: tests/docker_fixtures.py)."""

from __future__ import annotations

import pytest_twisted

from tests.helpers import new_image
from tests.web.dashboard.conftest import Dashboard, in_browser

DOCKERFILE = "FROM pxed-test-busybox:latest\nRUN echo built-in-the-dashboard > /hello\n"


@pytest_twisted.ensureDeferred
async def test_build_from_a_dockerfile_and_read_its_log(
    browser, start_server, docker_host, base_image, tmp_path
):
    server = await start_server(docker_host=docker_host)
    image = await new_image(server.admin, "built")
    dashboard = Dashboard(browser, server, tmp_path)

    def steps() -> None:
        d = dashboard
        d.sign_in()
        d.go(f"image/{image}")
        d.wait_heading("built")
        d.fill("#build textarea[name=dockerfile]", DOCKERFILE)
        d.select("#build select[name=format]", "tar")
        d.click("#build button[type=submit]")
        d.wait_heading("Build ")
        d.wait_text("#build-log", "built-in-the-dashboard", timeout=180)
        d.wait_text("#build-state", "succeeded", timeout=180)
        d.wait_text("#status", "log complete")
        d.check_accessibility("build")
        d.click("a[href^='#/image/']")
        d.wait_heading("built")
        d.wait_text("#builds", "succeeded")
        d.wait_text("#versions", "build")

    await in_browser(steps)
