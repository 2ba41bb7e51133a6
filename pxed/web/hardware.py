"""Hardware inventory: /machine/{mac}/hardware.  The management OS sends
it on every boot; an unknown machine booted to enlist sends it with its
enlistment credential, which creates the machine, unmanaged, and spends
the credential."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from pxed import macaddr
from pxed.boot.credentials import Credentials
from pxed.db import hardware, machines
from pxed.db.enlist import EnlistCredential
from pxed.db.hardware import Inventory
from pxed.db.pool import DBPool
from pxed.errors import Forbidden, NotFound
from pxed.imagestore import ImageStore
from pxed.web import render
from pxed.web.auth import actor, identity
from pxed.web.body import read_json
from pxed.web.inventory import parse as parse_inventory
from pxed.web.lookup import machine_or_404
from pxed.web.router import route

# What an enlisted machine's Architecture may be; others enlist as x86_64
# (the management OS they booted) and an admin corrects it.
ARCHITECTURES = ("x86_64", "arm64")


class HardwareResource:
    def __init__(self, db: DBPool, store: ImageStore, credentials: Credentials) -> None:
        self._db = db
        self._store = store
        self._credentials = credentials

    @route("/machine/<mac>/hardware", ["PUT"], access="machine-or-enlist")
    async def put_hardware(self, request: IRequest, mac: str) -> dict:
        """Register the machine's hardware inventory (the management OS)."""
        body = read_json(request)
        inv = parse_inventory(body)
        mac = macaddr.normalise(mac)
        who = identity(request)
        if who.enlist is not None:
            machine = await self._enlist(who.enlist, inv, actor(request))
            request.setResponseCode(201)
            source = "enlist"
        else:
            machine = await machine_or_404(self._db, mac)
            source = "deploy" if who.machine is not None else "admin"
        found = await self._db.run(hardware.thd_store, machine.id, inv, source, actor(request))
        return render.hardware(found, mac)

    async def _enlist(self, cred: EnlistCredential, inv: Inventory, who: str) -> machines.Machine:
        """The machine of an enlisting MAC, made now: named after the MAC,
        not managed, state new.  Its credential is spent."""
        if await self._db.read(machines.thd_get, cred.mac) is not None:
            raise Forbidden("this MAC is a machine already: its enlistment credential is spent")
        arch = inv.arch if inv.arch in ARCHITECTURES else "x86_64"
        fields = machines.MachineFields(architecture=arch, managed=False, macs=(cred.mac,))
        machine, _ = await self._store.create_machine(fields, who)
        await self._credentials.spend(cred)
        return machine

    @route("/machine/<mac>/hardware", ["GET"], access="signed-in")
    async def get_hardware(self, request: IRequest, mac: str) -> dict:
        """The machine's inventory as last sent, with when."""
        machine = await machine_or_404(self._db, mac)
        found = await self._db.read(hardware.thd_get, machine.id)
        if found is None:
            raise NotFound("no inventory yet: the management OS sends it when the machine boots it")
        return render.hardware(found, machine.macs[0])
