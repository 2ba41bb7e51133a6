"""A deploy in the dashboard as a person does it: a setup made of an image,
queued on a machine from its page, then followed without reloading while
the management OS (played here over real HTTP, as tests/web/test_agent.py
does) takes the work, reports progress and a log line, and completes it.
With PXED_UPDATE_DOCS=1 the machines page's screenshot becomes the
README's docs/dashboard.png.
Also the power buttons, shown only for a machine with a power driver."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest_twisted

from tests.helpers import MAC, MIB, add_machine, machine_client, new_image, only_on, upload_version
from tests.web.dashboard.conftest import Dashboard, in_browser

pytestmark = only_on("sqlite", "the browser is tested here, not the database")

DOCS = Path(__file__).parents[3] / "docs"
LINE = "writing disk <sda> from the management OS"


class ManagementOS:
    """The machine's side, over HTTP with the credential of its work."""

    def __init__(self, server, image: str) -> None:
        self.server = server
        self.image = image
        self.client = None

    async def take(self) -> None:
        self.client = await machine_client(self.server)
        r = await self.client.get(f"/machine/{MAC}/boot")  # BootInform
        assert r.code == 200, r.text

    async def progress(self, written: int) -> None:
        body = {"Image": self.image, "Written": written, "Total": MIB}
        r = await self.client.post(f"/machine/{MAC}/progress", body)
        assert r.code == 200, r.text

    async def log(self, message: str) -> None:
        r = await self.client.post("/log", {"Level": "info", "Message": message})
        assert r.code == 200, r.text

    async def complete(self) -> None:
        r = await self.client.post(f"/machine/{MAC}/boot/complete", {"Success": True})
        assert r.code == 200, r.text


@pytest_twisted.ensureDeferred
async def test_queue_a_deploy_and_follow_it_live(dashboard, server):
    await add_machine(server, name="rack1-node1")
    for n in range(2, 5):  # idle neighbours, for the screenshot
        await add_machine(server, mac=f"52:54:00:00:01:{n:02x}", name=f"rack1-node{n}")
    image = await new_image(server.admin, "debian")
    await upload_version(server.admin, image, b"d" * MIB)
    mgmtos = ManagementOS(server, image)

    def steps() -> None:
        d = dashboard
        d.sign_in()
        # A setup of the image.
        d.go("setups")
        d.wait_heading("Setups")
        d.check_accessibility("setups-empty")
        d.fill("#create-setup input[name=Name]", "debian on node1")
        d.click("#create-setup button[type=submit]")
        d.wait_heading("debian on node1")
        d.select("#add-image select[name=UUID]", "debian (2 versions)")
        d.click("#add-image button[type=submit]")
        d.wait_text("#entries", "debian")
        d.check_accessibility("setup")
        # Queued from the machine's page.
        d.go(f"machine/{MAC}")
        d.wait_heading("rack1-node1")
        assert d.find_all("#power-actions") == [], "no power driver, no power buttons"
        d.check_accessibility("machine-before")
        d.select("#deploy select[name=SetupUUID]", "debian on node1")
        d.click("#deploy button[type=submit]")
        d.wait_text("#status", "Queued work")
        d.wait_text("#queue", "queued")
        # The list follows the work from the stream.
        d.go("machines")
        d.wait_heading("Machines")
        d.wait_text("#machine-rows", "queued")
        d.call(mgmtos.take)
        d.wait_text("#machine-rows", "started")
        d.call(mgmtos.progress, MIB // 2)
        d.until(
            lambda: d.js("return document.querySelector('#machine-rows progress').value") == 50,
            what="the progress bar at 50 %",
        )
        d.check_accessibility("machines")
        if os.environ.get("PXED_UPDATE_DOCS"):  # the README's screenshot
            shutil.copyfile(d.out / "machines.png", DOCS / "dashboard.png")
        # The machine's page: its log and the end of the work, live.
        d.go(f"machine/{MAC}")
        d.wait_heading("rack1-node1")
        d.call(mgmtos.log, LINE)
        d.wait_text("#log", LINE)
        d.call(mgmtos.progress, MIB)
        d.call(mgmtos.complete)
        d.wait_text("#events", "queue.done")
        d.wait_text("#queue", "Nothing queued")  # the queue is what is still to do
        d.wait_text("#summary", "deployed")
        d.until(lambda: "Current work\nnone" in d.text("#summary"), what="no current work")
        d.check_accessibility("machine")
        # Queued again, and cancelled from the queue.
        d.select("#deploy select[name=SetupUUID]", "debian on node1")
        d.click("#deploy button[type=submit]")
        d.wait_text("#status", "Queued work 2")
        d.button("Cancel work 2").click()
        d.wait_text("#status", "Cancelled work 2")
        d.wait_text("#queue", "Nothing queued")
        d.wait_text("#events", "queue.cancel")

    await in_browser(steps)


@pytest_twisted.ensureDeferred
async def test_power_buttons_are_there_for_a_driver_and_say_why_they_fail(
    browser, start_server, tmp_path
):
    server = await start_server(power_retries=0)
    dashboard = Dashboard(browser, server, tmp_path)
    await add_machine(server, name="plain")
    other = "52:54:00:00:00:0b"
    await add_machine(server, mac=other, name="bmc")
    power = {
        "Driver": "redfish",
        # Nothing listens there: the action fails with its reason.
        "Address": "http://127.0.0.1:9",
        "Username": "root",
        "Password": "secret",
        "System": "System.Embedded.1",
    }
    r = await server.admin.put(f"/machine/{other}", {"Power": power})
    assert r.code == 200, r.text

    def steps() -> None:
        d = dashboard
        d.sign_in()
        d.go(f"machine/{MAC}")
        d.wait_heading("plain")
        assert d.find_all("#power-actions") == []
        d.go(f"machine/{other}")
        d.wait_heading("bmc")
        d.wait_text("#power-state", "unknown")  # the BMC does not answer
        d.button("Power cycle").click()
        d.until(lambda: "error" in d.find("#status").get_attribute("class"), what="an error")
        assert "\n" not in d.status() and "127.0.0.1:9" in d.status(), d.status()
        d.check_accessibility("machine-power")

    await in_browser(steps)


@pytest_twisted.ensureDeferred
async def test_hints_user_data_and_erasing_are_set_from_the_dashboard(dashboard, server):
    await add_machine(server, name="node7")
    image = await new_image(server.admin, "debian")
    await upload_version(server.admin, image, b"d" * MIB)

    def steps() -> None:
        d = dashboard
        d.sign_in()
        d.go("setups")
        d.wait_heading("Setups")
        d.fill("#create-setup input[name=Name]", "on the SSD")
        d.click("#create-setup button[type=submit]")
        d.wait_heading("on the SSD")
        d.select("#add-image select[name=UUID]", "debian (2 versions)")
        d.fill("#add-image input[name=Serial]", "S3EVNX0K")
        d.fill("#add-image input[name=MinSize]", "100")
        d.select("#add-image select[name=Rotational]", "no (SSD, NVMe)")
        d.click("#add-image button[type=submit]")
        d.wait_text("#entries", "Serial=S3EVNX0K")
        d.check_accessibility("setup-hints")

        d.go(f"machine/{MAC}")
        d.wait_heading("node7")
        d.wait_text("#summary", "nobody on record")
        d.select("#erase-policy select[name=Erase]", "full")
        d.click("#erase-policy button[type=submit]")
        d.wait_text("#status", "Erase policy: full")
        d.wait_text("#summary", "full")
        d.select("#deploy select[name=SetupUUID]", "on the SSD")
        d.select("#deploy select[name=Erase]", "discard, whoever's")
        d.fill("#deploy textarea[name=UserData]", "#cloud-config\nruncmd: [true]")
        d.click("#deploy button[type=submit]")
        d.wait_text("#status", "Queued work 1")
        d.select("#erase-now select[name=Policy]", "metadata")
        d.click("#erase-now button[type=submit]")
        d.wait_text("#status", "Queued work 2: erase (metadata)")
        d.check_accessibility("machine-erase")

    await in_browser(steps)
    machine = (await server.admin.get(f"/machine/{MAC}")).json()
    assert machine["Erase"] == "full"
    [setup] = (await server.admin.get("/user/admin/image_setups")).json()
    hints = setup["Images"][0]["DiskHints"]
    assert hints == {"Serial": "S3EVNX0K", "MinSize": 100 * 10**9, "Rotational": False}, hints
    queue = (await server.admin.get(f"/machine/{MAC}/boot/queue")).json()
    assert [(w["EraseAsked"], w["HasUserData"]) for w in queue] == [
        ("discard", True),
        ("metadata", False),
    ]
