"""pxectl demo's parts that need no VM: the disk image it makes, and the
errors that stop it before it registers anything.  The whole demo, a VM
deployed from a pxed started as the README says, is
tests/e2e/test_firstrun.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import pytest_twisted

from pxed import tools
from pxed.cli.demo import DEMO_MAC, IMAGE_SIZE, MIB, make_disk_image
from tests.cli.conftest import Pxectl, token_of
from tests.helpers import require_tool


def test_the_image_is_a_partitioned_disk_with_a_hello_file(tmp_path: Path):
    require_tool("debugfs", "e2fsprogs")
    image = make_disk_image(tmp_path)
    data = image.read_bytes()
    assert len(data) == IMAGE_SIZE
    assert data[510:512] == b"\x55\xaa"
    # The one partition: type 0x83 (Linux) from sector 2048 to the end.
    assert data[446 + 4] == 0x83
    assert int.from_bytes(data[446 + 8 : 446 + 12], "little") == MIB // 512
    assert int.from_bytes(data[446 + 12 : 446 + 16], "little") == (IMAGE_SIZE - MIB) // 512
    partition = tmp_path / "partition"
    partition.write_bytes(data[MIB:])
    debugfs = tools.find("debugfs", package="e2fsprogs")
    hello = subprocess.run(
        [debugfs, "-R", "cat /hello.txt", str(partition)], capture_output=True, text=True
    ).stdout
    assert hello.startswith("Hello from pxed")


@pytest_twisted.ensureDeferred
async def test_without_qemu_it_names_the_packages_and_makes_nothing(pxectl):
    result = await pxectl("demo", PATH="/nonexistent")
    assert result.code == 1, result
    assert "qemu-system-x86_64 not found: apt-get install qemu-system-x86 ipxe-qemu" in result.err
    r = await pxectl.server.admin.get(f"/machine/{DEMO_MAC}")
    assert r.code == 404


@pytest.mark.e2e
@pytest_twisted.ensureDeferred
async def test_off_the_boot_networks_it_says_what_to_set(start_server, tmp_path: Path):
    require_tool("qemu-system-x86_64", "qemu-system-x86")
    # Stand-ins for the management OS: the VM is refused before it would fetch it.
    static = tmp_path / "static"
    (static / "mgmtos" / "x86_64").mkdir(parents=True)
    for name in ("vmlinuz", "initramfs"):
        (static / "mgmtos" / "x86_64" / name).write_bytes(b"not fetched")
    server = await start_server(boot_networks=["10.0.0.0/8"], static_dir=str(static))
    pxectl = Pxectl(server, tmp_path / "config", token_of(server.admin))
    result = await pxectl("demo", "--timeout", "120")
    assert result.code == 1, result
    assert "event  boot.answer: local disk: client not on a boot network" in result.out
    assert 'add "127.0.0.0/8" to boot_networks' in result.err
    assert "Removed what the demo made" in result.out
    assert (await server.admin.get(f"/machine/{DEMO_MAC}")).code == 404
