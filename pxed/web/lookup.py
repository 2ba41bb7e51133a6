"""Finding what a path names, or a 404 that says what was missing."""

from __future__ import annotations

from pxed import macaddr
from pxed.db import machines
from pxed.db.machines import Machine
from pxed.db.pool import DBPool


async def machine_or_404(db: DBPool, mac: str) -> Machine:
    """The machine with MAC *mac* (any spelling macaddr accepts)."""
    return await db.read(machines.thd_get_or_404, macaddr.normalise(mac))
