"""End to end: QEMU (TCG, no KVM) with Debian's iPXE ROMs netboots from a
pxed on loopback into the reference management OS (pxed/mgmtos/), which
really writes the VM's disk files.  The ``qemu`` and ``mgmtos`` fixtures and
``run_vm`` are in tests/vmfixtures.py, shared with tests/realnet."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from tests.vmfixtures import MGMTOS_CMDLINE


def pytest_collection_modifyitems(config, items):
    """Every test here is ``e2e`` (see tests/conftest.py)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def start_netboot(start_server, mgmtos):
    """Starts pxed with the management OS; the VM reaches it as 10.0.2.2
    (QEMU's user networking), and boot URLs come from the Host header the
    VM uses."""

    async def start(**settings):
        server = await start_server(
            static_dir=str(mgmtos),
            config_text=f'[mgmtos.x86_64]\ncmdline = "{MGMTOS_CMDLINE}"\n',
            **settings,
        )
        server.port = int(server.url.rsplit(":", 1)[1])
        return server

    return start


@pytest_twisted.async_yield_fixture
async def netboot_server(start_netboot):
    yield await start_netboot()


@pytest.fixture
def database() -> str:
    """The VMs' pxed keeps its data on SQLite only: these tests are about
    netbooting real machines, which the API tests already cover on both
    databases (tests/conftest.py)."""
    return "sqlite"
