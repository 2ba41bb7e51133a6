"""Signing in and out of the dashboard, and what the browser keeps: the API
token is sent once and stored nowhere (no localStorage, sessionStorage or
script-readable cookie), the session cookie is HttpOnly, changes need the
CSRF header, and no page breaks the Content-Security-Policy."""

from __future__ import annotations

import pytest_twisted

from tests.helpers import MAC, add_machine, new_image, only_on
from tests.web.dashboard.conftest import in_browser

pytestmark = only_on("sqlite", "the browser is tested here, not the database")


@pytest_twisted.ensureDeferred
async def test_sign_in_keeps_no_token_and_sign_out_ends_the_session(dashboard, server):
    def steps() -> None:
        d = dashboard
        d.open()
        d.wait_heading("Sign in to pxed")
        github = d.find("a[href^='/user/login/github']")
        assert github.get_attribute("href") == f"{d.url}/user/login/github?redirect=/"
        d.check_accessibility("sign-in")
        d.fill("#signin input[name=token]", "pxu_not-a-token")
        d.click("#signin button[type=submit]")
        d.until(lambda: "error" in d.find("#status").get_attribute("class"), what="an error")
        assert d.status() and "\n" not in d.status()
        assert not d.find("#nav").is_displayed()

        token = d.admin_token
        d.sign_in(token)
        assert d.text("#who") == "admin (admin)"
        kept = d.js(
            "return {local: localStorage.length, session: sessionStorage.length,"
            " cookie: document.cookie}"
        )
        assert kept["local"] == 0 and kept["session"] == 0
        assert token not in kept["cookie"]
        assert "pxed-csrf=" in kept["cookie"]
        assert "session-name" not in kept["cookie"], "the session cookie is HttpOnly"
        # A change without the CSRF header is refused, with it allowed.
        without, with_header = d.js(
            "const body = JSON.stringify({Name: 'x'});"
            "const csrf = document.cookie.match(/pxed-csrf=([^;]+)/)[1];"
            "const post = (h) => fetch('/image', {method: 'POST', body,"
            "  headers: {'Content-Type': 'application/json', ...h}}).then(r => r.status);"
            "return Promise.all([post({}), post({'X-CSRF-Token': decodeURIComponent(csrf)})]);"
        )
        assert (without, with_header) == (403, 201)

        d.click("#sign-out")
        d.wait_heading("Sign in to pxed")
        assert d.js("return fetch('/user/me').then(r => r.status)") == 401
        d.open()
        d.wait_heading("Sign in to pxed")
        assert d.js("return localStorage.length + sessionStorage.length") == 0

    await in_browser(steps)


@pytest_twisted.ensureDeferred
async def test_no_page_breaks_the_content_security_policy(dashboard, server):
    await add_machine(server, name="csp")
    image = await new_image(server.admin, "csp-image")
    setup = await server.admin.post(
        "/user/admin/image_setup", {"Name": "csp-setup", "Images": [{"UUID": image}]}
    )
    assert setup.code == 201, setup.text

    def steps() -> list:
        d = dashboard
        d.sign_in()
        pages = {
            "machines": "Machines",
            f"machine/{MAC}": "csp",
            "images": "Images",
            f"image/{image}": "csp-image",
            "setups": "Setups",
            f"setup/{setup.json()['UUID']}": "csp-setup",
            "users": "Users",
            "user/admin": "Tokens of admin",
        }
        for route, heading in pages.items():
            d.open(route)  # loaded afresh: each load is checked by the browser
            d.wait_heading(heading)
        return d.driver.get_log("browser")

    logged = await in_browser(steps)
    refused = [
        e["message"]
        for e in logged
        if "Content Security Policy" in e["message"] or "Refused to" in e["message"]
    ]
    assert refused == []
    # And no script failed (a machine without inventory answers 404 to
    # its hardware: the browser logs that as a network error, the page
    # says "No inventory yet").
    assert [e for e in logged if e["level"] == "SEVERE" and e["source"] != "network"] == []
