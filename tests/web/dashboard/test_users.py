"""Users and tokens in the dashboard, as an admin uses them: create a user,
change its role, delete it; create a token (shown once), revoke it."""

from __future__ import annotations

import pytest_twisted

from tests.helpers import only_on
from tests.web.dashboard.conftest import in_browser

pytestmark = only_on("sqlite", "the browser is tested here, not the database")


@pytest_twisted.ensureDeferred
async def test_users_and_their_roles(dashboard, server):
    def steps() -> None:
        d = dashboard
        d.sign_in()
        d.click("#nav a[href='#/users']")
        d.wait_heading("Users")
        d.fill("#create-user input[name=Username]", "carol")
        d.fill("#create-user input[name=Email]", "carol@example.org")
        d.fill("#create-user input[name=Name]", "Carol <C>")
        d.click("#create-user button[type=submit]")
        d.wait_text("#user-rows", "carol@example.org")
        assert "Carol <C>" in d.text("#user-rows")
        d.check_accessibility("users")
        d.select("select[data-user=carol]", "moderator")
        d.button("Set role of carol").click()
        d.wait_text("#status", "carol is now moderator")
        d.button("Delete carol").click()
        d.button("Confirm: Delete carol").click()
        d.until(lambda: "carol" not in d.text("#user-rows"), what="carol gone")

    await in_browser(steps)
    r = await server.admin.get("/user/carol")
    assert r.code == 404


@pytest_twisted.ensureDeferred
async def test_a_token_is_shown_once_and_revoked(dashboard, server):
    def steps() -> str:
        d = dashboard
        d.sign_in()
        d.click("#my-tokens")
        d.wait_heading("Tokens of admin")
        d.fill("#create-token input[name=Name]", "laptop")
        d.fill("#create-token input[name=ExpiresInDays]", "30")
        d.click("#create-token button[type=submit]")
        d.wait_text("#new-token", "shown once")
        token = d.text("#token-value")
        assert token.startswith("pxu_")
        d.wait_text("#token-rows", "laptop")
        d.check_accessibility("tokens")
        # Not kept anywhere: gone when the page is left and come back to.
        d.go("machines")
        d.wait_heading("Machines")
        d.go("user/admin")
        d.wait_text("#token-rows", "laptop")
        assert d.text("#new-token") == ""
        assert token not in d.driver.page_source
        d.button("Revoke laptop").click()
        d.button("Confirm: Revoke laptop").click()
        d.until(lambda: "laptop" not in d.text("#token-rows"), what="the token gone")
        return token

    token = await in_browser(steps)
    r = await server.anonymous.bearer(token).get("/user/me")
    assert r.code == 401


@pytest_twisted.ensureDeferred
async def test_ssh_keys_are_added_listed_and_removed(dashboard, server):
    key = (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEBu2i2P/uExF5yjGB2ciJ4cDeOeALQxl3+QlViZqYJt "
        "admin@laptop"
    )

    def steps() -> None:
        d = dashboard
        d.sign_in()
        d.click("#my-tokens")
        d.wait_heading("Tokens of admin")
        d.fill("#add-key textarea[name=Key]", "ssh-ed25519 not-a-key")
        d.click("#add-key button[type=submit]")
        d.until(lambda: "not a valid ssh-ed25519" in d.status(), what="the refusal shown")
        d.fill("#add-key textarea[name=Key]", key)
        d.click("#add-key button[type=submit]")
        d.wait_text("#key-rows", "admin@laptop")
        assert "SHA256:" in d.text("#key-rows")
        d.check_accessibility("keys")
        d.button("Remove key admin@laptop").click()
        d.button("Confirm: Remove key admin@laptop").click()
        d.wait_text("#key-rows", "No SSH keys.")

    await in_browser(steps)
    actions = [e["Action"] for e in (await server.admin.get("/events?target=admin")).json()]
    assert "user.key.add" in actions and "user.key.delete" in actions
