"""pxed's dnsmasq as a child service: killed, it is started again and
/healthz says so meanwhile; stopped with pxed; and a boot network that
cannot be served stops pxed's start with one line naming the setting."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
import pytest_twisted

from pxed import service
from pxed.bootnet import service as bootnet_service
from tests.bootnet.test_proxy import answered, proxy_server
from tests.helpers import MAC, add_machine, eventually, only_on

pytestmark = only_on("sqlite", "dnsmasq as pxed's child, not the database")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone as far as anyone is concerned.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest_twisted.ensureDeferred
async def test_killed_dnsmasq_is_restarted(start_server, bootlink, dnsmasq, logged):
    server = await proxy_server(start_server, bootlink)
    await add_machine(server, MAC)
    await eventually(lambda: answered(bootlink, MAC))
    health = (await server.anonymous.get("/healthz")).json()
    assert (health["status"], health["boot_dhcp"]) == ("ok", "running")
    first = server.pxed.bootnet.pid
    os.kill(first, signal.SIGKILL)

    async def health_is(state: str) -> bool:
        return (await server.anonymous.get("/healthz")).json()["boot_dhcp"] == state

    await eventually(lambda: health_is("restarting"), timeout=5)
    health = (await server.anonymous.get("/healthz")).json()
    assert health["status"] == "degraded"
    assert any("dnsmasq was killed by signal 9" in line for line in logged)
    await eventually(lambda: health_is("running"), timeout=10)
    assert server.pxed.bootnet.pid != first
    await eventually(lambda: answered(bootlink, MAC))
    assert (await server.anonymous.get("/healthz")).json()["status"] == "ok"


@pytest_twisted.ensureDeferred
async def test_dnsmasq_stops_with_pxed(start_server, bootlink, dnsmasq, logged):
    server = await proxy_server(start_server, bootlink)
    pid = server.pxed.bootnet.pid
    assert any("pxed.bootnet.dnsmasq" in line and "started, version" in line for line in logged)
    await server.pxed.service.stopService()
    assert not alive(pid)
    assert not any("dnsmasq exited" in line or "killed by" in line for line in logged)


@pytest_twisted.ensureDeferred
async def test_a_boot_network_pxed_cannot_serve_stops_its_start(start_server, tmp_path, dnsmasq):
    async def error(**settings) -> str:
        with pytest.raises(service.StartupError) as e:
            await start_server(boot_dhcp="proxy", **settings)
        return str(e.value)

    assert (await error(boot_dhcp_interface="pxedt-none")).startswith(
        "boot_dhcp_interface: no interface 'pxedt-none' on this host (there are: lo"
    )
    assert await error(boot_dhcp_interface="lo", boot_dhcp_command="/nonexistent/dnsmasq") == (
        "boot_dhcp_command: '/nonexistent/dnsmasq' not found (boot_dhcp = \"proxy\" runs"
        " dnsmasq: apt-get install dnsmasq-base)"
    )
    assert await error(boot_dhcp_interface="lo", boot_dhcp_ipxe_dir=str(tmp_path)) == (
        f"boot_dhcp_ipxe_dir: no undionly.kpxe in {tmp_path} (Debian's iPXE: apt-get install ipxe)"
    )
    message = await error(boot_dhcp_interface="lo", boot_dhcp_options=["no-such-option=1"])
    assert message.startswith("boot_dhcp: dnsmasq refuses its configuration ")
    assert "bad option" in message or "bad command line options" in message, message


@pytest_twisted.ensureDeferred
async def test_a_dnsmasq_that_keeps_dying_is_failed_and_still_retried(
    start_server, bootlink, dnsmasq, logged, monkeypatch
):
    # Port 67 taken (without SO_REUSEADDR, so dnsmasq cannot share it):
    # every dnsmasq pxed starts exits at once.
    monkeypatch.setattr(bootnet_service, "FIRST_DELAY", 0.05)
    monkeypatch.setattr(bootnet_service, "MAX_DELAY", 0.2)
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("", 67))
    try:
        server = await start_server(boot_dhcp="proxy", boot_dhcp_interface=bootlink.server)

        async def health() -> dict:
            return (await server.anonymous.get("/healthz")).json()

        await eventually(lambda: server.pxed.bootnet.state == "failed")
        assert (await health())["status"] == "degraded"
        exits = [line for line in logged if "boot network: dnsmasq exited with code" in line]
        assert len(exits) >= bootnet_service.FAILED_AFTER
        assert "in use" in exits[0], exits[0]  # its last line says why
    finally:
        taken.close()
    # Once it can run, it does: pxed kept trying.
    await eventually(lambda: server.pxed.bootnet.state == "running")
    await add_machine(server, MAC)
    await eventually(lambda: answered(bootlink, MAC))
    assert (await health())["boot_dhcp"] == "running"
