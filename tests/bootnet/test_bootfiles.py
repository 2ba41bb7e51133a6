"""GET /boot/<file>: Debian's iPXE binaries over HTTP, for UEFI HTTP boot."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from tests.helpers import missing, only_on

pytestmark = only_on("sqlite", "files from the iPXE package, no database")

IPXE = Path("/usr/lib/ipxe")


@pytest.fixture
def ipxe() -> Path:
    if not (IPXE / "snponly.efi").is_file():
        missing("Debian's iPXE binaries are not installed: apt-get install ipxe")
    return IPXE


@pytest_twisted.ensureDeferred
async def test_the_efi_binary_is_served_whole_and_in_ranges(start_server, ipxe):
    server = await start_server()
    want = (ipxe / "snponly.efi").read_bytes()
    r = await server.anonymous.request("GET", "/boot/snponly.efi")
    assert (r.code, r.body) == (200, want)
    r = await server.anonymous.request("GET", "/boot/ipxe.efi", headers={"Range": "bytes=0-1"})
    assert (r.code, r.body) == (206, b"MZ")  # a PE image, as UEFI loads
    head = await server.anonymous.head_headers("/boot/undionly.kpxe")
    assert head["content-length"] == str((ipxe / "undionly.kpxe").stat().st_size)


@pytest_twisted.ensureDeferred
async def test_only_ipxe_files_only_to_boot_networks(start_server, ipxe):
    server = await start_server()
    for name in ("ipxe.iso", "..%2F..%2Fetc%2Fpasswd", "vmlinuz"):
        r = await server.anonymous.request("GET", f"/boot/{name}")
        assert r.code == 404, (name, r.text)
    elsewhere = await start_server(boot_networks=["10.0.0.0/8"])
    r = await elsewhere.anonymous.request("GET", "/boot/snponly.efi")
    assert r.code == 403
    assert "boot_networks" in r.json()["error"]
