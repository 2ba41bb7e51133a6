"""The lab in network namespaces (tests/realnet/lab.py), built once per
run and removed at its end (and a stale one a killed run left, at its
start): the lab's own DHCP server, pxed in its namespace, taps for QEMU
VMs that boot from their NIC's firmware.  Everything here is ``realnet``
and ``e2e`` (see tests/conftest.py): it boots QEMU VMs, so the inner
loop leaves it out.

    python -m pytest -m realnet -q"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import missing, require_tool
from tests.realnet import lab, labdhcp, labpxed
from tests.realnet.labdhcp import LabDHCP
from tests.realnet.labpxed import LabPxed
from tests.realnet.labvm import IPXE_ROMS
from tests.vmfixtures import OVMF

# The lab's pxed without a boot network of its own: the lab's DHCP server
# (standalone) points the machines at it.
STANDALONE_PORT = 4849
# The lab's pxed with its own proxyDHCP, for its wire and the rack a relay
# forwards (not the other rack behind that relay).
PROXY_PORT = 4848
PROXY_SETTINGS = f"""
boot_dhcp = "proxy"
boot_dhcp_interface = "{lab.LAB_INTERFACE}"
boot_networks = ["{lab.SUBNET}", "{lab.RELAYED_RACK.network}"]
boot_dhcp_options = ["log-dhcp"]
"""


def pytest_collection_modifyitems(config, items):
    """Every test here is ``realnet`` and ``e2e``."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.realnet)
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def lab_network(qemu: str) -> Iterator[None]:
    if os.geteuid() != 0:
        missing("the lab's network namespaces need root (ip netns, tap devices)")
    require_tool("ip", "iproute2")
    require_tool("dnsmasq", "dnsmasq-base")
    for path, package in (
        (OVMF, "ovmf"),
        (IPXE_ROMS / "efi-virtio.rom", "ipxe-qemu"),
        (labdhcp.IPXE_DIR / "snponly.efi", "ipxe"),
        (labdhcp.IPXE_DIR / "undionly.kpxe", "ipxe"),
    ):
        if not path.exists():
            missing(f"{path} missing: apt-get install {package}")
    lab.remove()
    try:
        lab.build()
        yield
    finally:
        lab.remove()


@pytest.fixture(scope="session")
def lab_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="session")
def lab_dhcp(lab_network, lab_dir: Path) -> Iterator[LabDHCP]:
    server = LabDHCP(lab_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def standalone_pxed(lab_network, mgmtos: Path, lab_dir: Path) -> Iterator[LabPxed]:
    """A pxed answering HTTP only (boot_dhcp "off")."""
    workdir = lab_dir / "pxed-standalone"
    workdir.mkdir()
    px = labpxed.start(workdir, mgmtos, STANDALONE_PORT)
    try:
        yield px
    finally:
        px.stop()


@pytest.fixture(scope="session")
def proxy_pxed(lab_network, mgmtos: Path, lab_dir: Path) -> Iterator[LabPxed]:
    """A pxed answering the boot network itself: boot_dhcp "proxy" on its
    lab interface, for the lab's subnet only, registered MACs only."""
    workdir = lab_dir / "pxed-proxy"
    workdir.mkdir()
    px = labpxed.start(workdir, mgmtos, PROXY_PORT, PROXY_SETTINGS)
    try:
        labpxed.wait_until(lambda: px.healthz().get("boot_dhcp") == "running", px)
        yield px
    finally:
        px.stop()


@pytest.fixture
def standalone_lab(lab_dhcp: LabDHCP, standalone_pxed: LabPxed) -> LabPxed:
    """The lab's DHCP server doing all of netbooting (addresses, TFTP,
    the chain to pxed), pxed answering HTTP only; that pxed."""
    lab_dhcp.serve_standalone(standalone_pxed.lab_url)
    return standalone_pxed


@pytest.fixture
def proxy_lab(lab_dhcp: LabDHCP, proxy_pxed: LabPxed) -> LabPxed:
    """The lab's DHCP server handing out addresses only, pxed's proxyDHCP
    and TFTP doing the netbooting; that pxed."""
    lab_dhcp.serve_plain()
    return proxy_pxed
