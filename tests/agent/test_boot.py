"""Before the work: BootInform (no work, pxed unreachable), the inventory
the agent sends on every boot, enlist mode, and the settings from the
kernel command line."""

from __future__ import annotations

import pytest_twisted

from tests.agent.conftest import FACTS, Machine, disk_file, run_agent
from tests.helpers import MAC, MIB, add_machine, free_port, machine_token
from tests.web.test_enlist import enlist_token


@pytest_twisted.ensureDeferred
async def test_a_404_boot_inform_means_no_work(start_server, tmp_path):
    # boot_policy always: every boot gets a credential, work or not.
    server = await start_server(boot_policy="always")
    await add_machine(server)
    token = await machine_token(server)
    machine = Machine(server, tmp_path, token)
    disk = disk_file(tmp_path / "disk", 2 * MIB, b"\x42" * 2 * MIB)

    run = await machine.agent([disk])

    assert run.code == 0, run.output
    assert "no work for this machine" in run.output
    assert "reported to pxed" not in run.output
    assert disk.read_bytes() == b"\x42" * 2 * MIB
    assert any("no work for this machine" in m for m in await machine.logs())
    hardware = (await server.admin.get(f"/machine/{MAC}/hardware")).json()
    assert hardware["Source"] == "deploy" and hardware["Disks"][0]["Size"] == 2 * MIB


@pytest_twisted.ensureDeferred
async def test_the_inventory_carries_the_machines_facts(start_server, tmp_path):
    server = await start_server(boot_policy="always")
    await add_machine(server)
    machine = Machine(server, tmp_path, await machine_token(server))
    disks = [disk_file(tmp_path / "sda", 3 * MIB), disk_file(tmp_path / "sdb", 5 * MIB)]
    facts = {
        **FACTS,
        "Disks": [
            {"Path": str(disks[0]), "Name": "sda", "Model": "Spinner", "Serial": "S1",
             "Rotational": True},
            {"Path": str(disks[1]), "Name": "nvme0n1", "Model": "Fast", "Serial": "N1",
             "Rotational": False, "WWN": "eui.0025388b71b2e0a1",
             "ByPath": ["pci-0000:01:00.0-nvme-1"]},
        ],
    }  # fmt: skip

    run = await machine.agent([], facts=facts)

    assert run.code == 0, run.output
    hw = (await server.admin.get(f"/machine/{MAC}/hardware")).json()
    assert hw["Arch"] == "x86_64" and hw["Firmware"] == "uefi"
    assert hw["CPU"] == {"Model": "Test CPU @ 2.0GHz", "Count": 4}
    assert hw["Memory"] == 8 * 1024 * MIB
    assert hw["DMI"] == {"Vendor": "ACME", "Product": "Rack 9000", "Serial": "SN-0042"}
    assert hw["NICs"] == [{"MAC": MAC, "Driver": "virtio_net", "Link": True, "Speed": 1000}]
    assert hw["Disks"] == [
        {"Name": "sda", "Size": 3 * MIB, "Model": "Spinner", "Serial": "S1", "Rotational": True,
         "WWN": "", "ByPath": []},
        {"Name": "nvme0n1", "Size": 5 * MIB, "Model": "Fast", "Serial": "N1", "Rotational": False,
         "WWN": "eui.0025388b71b2e0a1", "ByPath": ["pci-0000:01:00.0-nvme-1"]},
    ]  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_an_unreachable_pxed_is_tried_again_then_given_up(server, tmp_path):
    machine = Machine(server, tmp_path, "pxe_not-a-real-token")
    dead = f"http://127.0.0.1:{free_port()}"

    run = await machine.agent([], "--connect-tries", "3", url=dead)

    assert run.code == 1
    assert run.output.count("trying again in 0.2 s") == 2, run.output
    assert f"pxed at {dead} is unreachable" in run.output
    assert "reported to pxed" not in run.output


@pytest_twisted.ensureDeferred
async def test_enlist_mode_registers_the_machine_and_nothing_else(start_server, tmp_path):
    server = await start_server(enlist=True)
    mac = "52:54:00:0e:00:07"
    machine = Machine(server, tmp_path, await enlist_token(server, mac), mac=mac)
    nic = {"MAC": mac, "Driver": "e1000", "Link": True, "Speed": 1000}
    disk = disk_file(tmp_path / "vda", 4 * MIB)

    run = await machine.agent([disk], "--mode", "enlist", facts={**FACTS, "NICs": [nic]})

    assert run.code == 0, run.output
    assert "enlisted: the machine waits in pxed for an admin" in run.output
    found = (await server.admin.get(f"/machine/{mac}")).json()
    assert found["Managed"] is False and found["State"] == "new"
    hw = (await server.admin.get(f"/machine/{mac}/hardware")).json()
    assert hw["Source"] == "enlist" and hw["DMI"]["Serial"] == "SN-0042"
    assert hw["Disks"] == [{"Name": "vda", "Size": 4 * MIB, "Model": "", "Serial": "",
                            "Rotational": None, "WWN": "", "ByPath": []}]  # fmt: skip
    # Again: the credential is spent, and the agent says so.
    again = await machine.agent([disk], "--mode", "enlist")
    assert again.code == 1 and "enlisting failed (HTTP 401" in again.output, again.output


@pytest_twisted.ensureDeferred
async def test_settings_come_from_the_kernel_command_line(start_server, tmp_path):
    server = await start_server(boot_policy="always")
    await add_machine(server)
    token = await machine_token(server)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(
        f"BOOT_IMAGE=vmlinuz console=ttyS0 pxed.url={server.url}/ "
        f"pxed.mac={MAC.upper().replace(':', '-')} pxed.token={token} pxed.after=poweroff\n"
    )
    # --after exit: this host must not power off; the rest is the cmdline's.
    run = await run_agent(["--cmdline", str(cmdline), "--after", "exit", "--disk-wait", "0"])

    assert run.code == 0, run.output
    assert f"MAC {MAC}, pxed at {server.url}," in run.output
    assert "no work for this machine" in run.output


@pytest_twisted.ensureDeferred
async def test_a_command_line_without_pxed_url_is_refused(tmp_path):
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 pxed.mac=52:54:00:12:34:56 pxed.token=pxe_x\n")

    run = await run_agent(["--cmdline", str(cmdline), "--after", "exit"])

    assert run.code == 2
    assert "pxed.url, pxed.mac and pxed.token must all be on the kernel command line" in run.output
    assert "missing: pxed.url" in run.output
    assert "pxe_x" not in run.output
