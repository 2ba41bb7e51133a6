"""The hardware inventory, sent on every boot (work or not) and alone in
enlist mode: PUT /machine/{mac}/hardware."""

from __future__ import annotations

from pxed.agent.client import Client
from pxed.agent.facts import Facts
from pxed.agent.wire import Inventory, InventoryDisk


def build(facts: Facts) -> Inventory:
    return Inventory(
        arch=facts.arch,
        cpu_model=facts.cpu_model,
        cpu_count=max(facts.cpu_count, 1),
        memory=facts.memory,
        firmware=facts.firmware,
        dmi_vendor=facts.dmi_vendor,
        dmi_product=facts.dmi_product,
        dmi_serial=facts.dmi_serial,
        disks=tuple(
            InventoryDisk(d.name, d.size, d.model, d.serial, d.rotational, d.wwn, d.by_path)
            for d in facts.disks or ()
        ),
        nics=facts.nics,
    )


def send(client: Client, mac: str, inventory: Inventory) -> int:
    """PUT the inventory; pxed's status (HTTPError for a refusal, OSError
    when pxed cannot be reached)."""
    answer = client.request(
        "PUT", f"/machine/{mac}/hardware", inventory.to_json(), timeout=30, ok=range(200, 300)
    )
    return answer.status
