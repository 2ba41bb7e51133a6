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
def lab_static(mgmtos: Path, lab_dir: Path) -> Path:
    """What the lab's pxed serves at /static/: the management OS (the
    ``mgmtos`` fixture's build) and, for UEFI HTTP boot clients the
    lab's DHCP server sends there, Debian's snponly.efi."""
    static = lab_dir / "static"
    (static / "ipxe").mkdir(parents=True)
    (static / "mgmtos").symlink_to(mgmtos / "mgmtos")
    (static / "ipxe" / "snponly.efi").symlink_to(labdhcp.IPXE_DIR / "snponly.efi")
    return static


@pytest.fixture(scope="session")
def standalone_pxed(lab_network, lab_static: Path, lab_dir: Path) -> Iterator[LabPxed]:
    workdir = lab_dir / "pxed-standalone"
    workdir.mkdir()
    px = labpxed.start(workdir, lab_static, STANDALONE_PORT)
    try:
        yield px
    finally:
        px.stop()


@pytest.fixture
def standalone_lab(lab_dhcp: LabDHCP, standalone_pxed: LabPxed, lab_dir: Path) -> LabPxed:
    """The lab's DHCP server doing all of netbooting (addresses, TFTP,
    the chain to pxed), pxed answering HTTP only; that pxed."""
    url = standalone_pxed.lab_url
    lab_dhcp.serve(labdhcp.standalone(lab_dir / "leases", url, f"{url}/static/ipxe/snponly.efi"))
    return standalone_pxed
