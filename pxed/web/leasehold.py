"""Who may use a machine under a lease: its holder and staff (the queue,
power and log routes ask here; leases themselves are pxed/web/leases.py)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from pxed.db import leases
from pxed.db.machines import Machine
from pxed.db.pool import DBPool
from pxed.errors import Forbidden
from pxed.web import render
from pxed.web.auth import user


async def check_lease(db: DBPool, request: IRequest, machine: Machine) -> None:
    """Forbidden unless the machine is under no lease now, or the caller
    holds it, or is staff."""
    caller = user(request)
    if caller.is_staff:
        return
    held = await db.read(leases.thd_holding, machine.id)
    if held is not None and held.holder != caller.username:
        raise Forbidden(
            f"machine {machine.name!r} is leased to {held.holder} until {render.iso(held.ends_at)}"
        )
