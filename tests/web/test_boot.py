"""The netboot answer for pixiecore and iPXE."""

from __future__ import annotations

import pytest_twisted

from tests.helpers import MAC, add_machine

BASE = "http://pxed.example:4848"


@pytest_twisted.ensureDeferred
async def test_always_policy_serves_configured_kernel_and_initrd(start_server):
    server = await start_server(boot_policy="always", base_url=BASE)
    client = server.client
    await add_machine(server)

    r = await client.get(f"/v1/boot/{MAC}")
    assert r.code == 200, r.text
    answer = r.json()
    assert answer["kernel"] == f"{BASE}/static/mgmtos/x86_64/vmlinuz"
    assert answer["initrd"] == [f"{BASE}/static/mgmtos/x86_64/initramfs"]
    assert f"pxed.url={BASE}" in answer["cmdline"]
    assert f"pxed.mac={MAC}" in answer["cmdline"]
    assert "localhost" not in r.text and "127.0.0.1" not in r.text
    # pixiecore asks several times per boot: the same answer each time.
    again = (await client.get(f"/v1/boot/{MAC.upper()}")).json()
    assert {k: again[k] for k in ("kernel", "initrd")} == {
        k: answer[k] for k in ("kernel", "initrd")
    }

    r = await client.get(f"/ipxe/{MAC}")
    assert r.code == 200
    script = r.text
    assert script.startswith("#!ipxe\n")
    assert f"kernel {BASE}/static/mgmtos/x86_64/vmlinuz " in script
    assert f"initrd --name initrd0 {BASE}/static/mgmtos/x86_64/initramfs" in script
    assert "pxed.mac=" + MAC in script
    assert script.rstrip().endswith("boot")


@pytest_twisted.ensureDeferred
async def test_per_architecture_files(start_server):
    server = await start_server(
        '[mgmtos.arm64]\nkernel = "arm/Image"\ninitrd = ["arm/a.img", "arm/b.img"]\n'
        'cmdline = "console=ttyAMA0 quiet"\n',
        boot_policy="always",
        base_url=BASE,
    )
    await add_machine(server, arch="arm64")
    answer = (await server.client.get(f"/v1/boot/{MAC}")).json()
    assert answer["kernel"] == f"{BASE}/static/arm/Image"
    assert answer["initrd"] == [f"{BASE}/static/arm/a.img", f"{BASE}/static/arm/b.img"]
    assert answer["cmdline"].startswith("console=ttyAMA0 quiet ")


@pytest_twisted.ensureDeferred
async def test_on_demand_without_work_boots_locally(start_server):
    server = await start_server(base_url=BASE)  # on-demand is the default
    await add_machine(server)
    r = await server.client.get(f"/v1/boot/{MAC}")
    assert r.code == 404
    assert "no queued work" in r.json()["error"]
    r = await server.client.get(f"/ipxe/{MAC}")
    assert r.code == 200
    assert r.text.startswith("#!ipxe\n")
    assert "\nexit\n" in r.text
    assert "kernel" not in r.text


@pytest_twisted.ensureDeferred
async def test_unknown_and_unmanaged_machines_boot_locally(start_server):
    server = await start_server(boot_policy="always", base_url=BASE)
    r = await server.client.get(f"/v1/boot/{MAC}")
    assert r.code == 404
    assert "unknown" in r.json()["error"]
    assert "exit" in (await server.client.get(f"/ipxe/{MAC}")).text
    assert (await server.client.get("/v1/boot/garbage")).code == 404

    await add_machine(server, managed=False)
    r = await server.client.get(f"/v1/boot/{MAC}")
    assert r.code == 404
    assert "not managed" in r.json()["error"]
    r = await server.client.get(f"/ipxe/{MAC}")
    assert "exit" in r.text and "kernel" not in r.text


@pytest_twisted.ensureDeferred
async def test_ipxe_chain_script_uses_base_url(start_server):
    server = await start_server(base_url=BASE + "/")
    r = await server.client.get("/ipxe")
    assert r.code == 200
    assert r.text == f"#!ipxe\nchain --autofree {BASE}/ipxe/${{net0/mac}}\n"


@pytest_twisted.ensureDeferred
async def test_without_base_url_the_host_header_is_used(start_server):
    server = await start_server(boot_policy="always")
    await add_machine(server)
    r = await server.client.get(f"/v1/boot/{MAC}", headers={"Host": "10.1.2.3:4848"})
    assert r.json()["kernel"] == "http://10.1.2.3:4848/static/mgmtos/x86_64/vmlinuz"
