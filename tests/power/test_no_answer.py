"""Scenario (d): a BMC that does not answer.  A Redfish address whose HTTP
server accepts connections and never answers, an IPMI address whose UDP
port nobody listens on: the power action fails with the reason once the
timeout and retries are spent, and queued work is not left stuck (it stays
queued, the machine takes it whenever it netboots, the events say why the
power did not come on)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor

from tests.helpers import (
    MAC,
    add_machine,
    eventually,
    machine_events,
    new_image,
    new_setup,
    only_on,
)
from tests.power.bmcs import free_udp_port

pytestmark = only_on("sqlite", "about BMCs; the settings' storage is in tests/web/test_power.py")


class Silent(protocol.Protocol):
    """Accepts, reads, never answers."""

    def dataReceived(self, data: bytes) -> None:
        pass


@pytest.fixture
def silent_http():
    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Silent), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}"
    port.stopListening()


@pytest.mark.parametrize("driver", ["redfish", "ipmi"])
@pytest_twisted.ensureDeferred
async def test_a_bmc_that_does_not_answer(start_server, silent_http, driver):
    server = await start_server(power_timeout=1.0, power_retries=1)
    address = silent_http if driver == "redfish" else f"127.0.0.1:{free_udp_port()}"
    await add_machine(server)
    settings = {"Driver": driver, "Address": address, "Username": "admin", "Password": "pw"}
    r = await server.admin.put(f"/machine/{MAC}", {"Power": settings})
    assert r.code == 200, r.text

    r = await server.admin.post(f"/machine/{MAC}/power", {"Action": "on"})
    assert r.code == 504, r.text
    error = r.json()["error"]
    assert "no answer" in error and "after 2 attempts" in error, error
    [event] = [e for e in await machine_events(server.admin) if e["Action"] == "power.on"]
    assert event["Detail"] == f"failed: {error.removeprefix('power: ')}"

    # Queued with Power: the answer does not wait for the BMC; the work
    # stays queued and the events say the power failed.
    image = await new_image(server.admin)
    setup = await new_setup(server.admin, "admin", [{"UUID": image}])
    body = {"SetupUUID": setup["UUID"], "Power": "cycle"}
    r = await server.admin.post(f"/machine/{MAC}/boot", body)
    assert r.code == 200, r.text
    work = r.json()["ID"]

    async def failed() -> list:
        return [
            e
            for e in await machine_events(server.admin)
            if e["Action"] == "power.bootdev" and f"work={work}" in e["Detail"]
        ]

    await eventually(failed, timeout=30)
    [bootdev] = await failed()
    assert "failed: " in bootdev["Detail"] and "no answer" in bootdev["Detail"], bootdev
    # It never got as far as the power itself.
    assert not [e for e in await machine_events(server.admin) if e["Action"] == "power.cycle"]
    queue = (await server.admin.get(f"/machine/{MAC}/boot/queue")).json()
    assert [(w["ID"], w["State"]) for w in queue] == [(work, "queued")]

    # A netboot now (the machine powered on by hand) still gets the work.
    async def netboots() -> bool:
        return "kernel" in (await server.anonymous.get(f"/ipxe/{MAC}")).text

    await eventually(netboots)
