"""Images in the dashboard as a person uses them: create one, upload a
file and watch the progress reach 100 %, see the version with its sha256,
download it, delete the image."""

from __future__ import annotations

import hashlib
import os

import pytest_twisted

from tests.helpers import only_on
from tests.web.dashboard.conftest import in_browser

pytestmark = only_on("sqlite", "the browser is tested here, not the database")

SIZE = 4 * 1024 * 1024


@pytest_twisted.ensureDeferred
async def test_create_upload_and_delete_an_image(dashboard, tmp_path):
    data = os.urandom(SIZE)
    file = tmp_path / "disk.img"
    file.write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()

    def steps() -> None:
        d = dashboard
        d.sign_in()
        d.go("images")
        d.wait_heading("Images")
        d.check_accessibility("images-empty")
        d.fill("#create-image input[name=Name]", "web <disk>")
        d.click("#create-image button[type=submit]")
        d.wait_heading("web <disk>")  # escaped, shown as typed
        d.wait_text("#versions", "created")  # version 0: the empty disk
        # The file goes to the file input; the browser sends it (XHR).
        d.find("#upload input[type=file]").send_keys(str(file))
        d.click("#upload button[type=submit]")
        d.wait_text("#status", f"sha256 {sha256}")
        assert d.js("return document.querySelector('#upload-progress').value") == 100
        assert d.text("#upload-percent") == "100 %"
        d.wait_text("#versions", sha256)
        row = d.find_all("#versions tr")[0]
        assert row.text.startswith("1 4.0 MiB " + sha256), row.text
        link = row.find_element(d.By.CSS_SELECTOR, "a[download]")
        uuid = d.js("return location.hash.split('/')[2]")
        assert link.get_attribute("href") == f"{d.url}/image/{uuid}/1"
        d.check_accessibility("image")
        # The download is the session's, as the link would fetch it.
        fetched = d.js(
            "return fetch(arguments[0]).then(r => r.arrayBuffer())"
            ".then(b => crypto.subtle.digest('SHA-256', b))"
            ".then(h => [...new Uint8Array(h)].map(x => x.toString(16).padStart(2, '0')).join(''))",
            link.get_attribute("href"),
        )
        assert fetched == sha256
        d.go("images")
        d.wait_text("#image-rows", sha256)
        rows = d.find_all("#image-rows tr")
        assert len(rows) == 1 and "web <disk>" in rows[0].text
        d.screenshot("images")
        d.go(f"image/{uuid}")
        d.wait_heading("web <disk>")
        delete = d.button("Delete image web <disk>")
        delete.click()
        d.button("Confirm: Delete image web <disk>").click()
        d.wait_heading("Images")
        d.wait_text("#status", "Deleted image web <disk>")
        assert d.find_all("#image-rows tr") == []

    await in_browser(steps)


@pytest_twisted.ensureDeferred
async def test_an_api_error_is_one_line_in_the_status(dashboard):
    def steps() -> None:
        d = dashboard
        d.sign_in()
        d.go("images")
        d.wait_heading("Images")
        d.fill("#create-image input[name=Name]", "tiny")
        d.fill("#create-image input[name=SizeMiB]", "0")
        d.js("document.querySelector('#create-image input[name=SizeMiB]').min = ''")
        d.click("#create-image button[type=submit]")
        d.wait_text("#status", "Size: at least")
        assert "\n" not in d.status()
        assert "error" in d.find("#status").get_attribute("class")

    await in_browser(steps)


@pytest_twisted.ensureDeferred
async def test_cloud_init_and_grow_are_set_on_an_images_page(dashboard, server):
    r = await server.admin.post("/image", {"Name": "debian", "Size": SIZE})
    uuid = r.json()["UUID"]

    def steps() -> None:
        d = dashboard
        d.sign_in()
        d.go(f"image/{uuid}")
        d.wait_heading("debian")
        assert not d.find("#deploys input[name=CloudInit]").is_selected()
        d.click("#deploys input[name=CloudInit]")
        d.click("#deploys input[name=Grow]")
        d.click("#deploys button[type=submit]")
        d.wait_text("#status", "cloud-init on, grow on")
        d.check_accessibility("image-deploys")
        d.go("images")
        d.wait_heading("Images")
        d.go(f"image/{uuid}")
        d.wait_heading("debian")
        assert d.find("#deploys input[name=Grow]").is_selected()

    await in_browser(steps)
    image = (await server.admin.get(f"/image/{uuid}")).json()
    assert image["CloudInit"] is True and image["Grow"] is True
