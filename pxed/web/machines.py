"""Machines: /machines, /machine, /machine/{mac}."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.iweb import IRequest

from pxed import erase, macaddr
from pxed.db import hardware, machines, progress
from pxed.db.pool import DBPool
from pxed.errors import BadRequest
from pxed.imagestore import ImageStore
from pxed.power.service import PowerService
from pxed.web import inventory, render
from pxed.web.auth import actor
from pxed.web.body import Fields, int_arg, query_args, read_json
from pxed.web.lookup import machine_or_404
from pxed.web.power import choice, power_settings
from pxed.web.router import route

# What pxed does with a machine when a lease of it ends (pxed.leasekeeper).
LEASE_ENDS = ("poweroff", "reimage", "none")
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}


def _mac_list(body: Fields) -> tuple[str, ...] | None:
    """Both input forms of the seed: ``"MacAddresses": [{"Mac": …}, …]`` and
    ``"MacAddress": {"Address": …}``; plain strings are accepted in either."""
    found: list[Any] = []
    if body.has("MacAddresses") and body.raw("MacAddresses") is not None:
        for item in body.list("MacAddresses") or []:
            if isinstance(item, dict):
                item = Fields(item).raw("Mac", Fields(item).raw("Address"))
            found.append(item)
        if not found:
            raise BadRequest("MacAddresses: must not be empty")
    if body.has("MacAddress") and body.raw("MacAddress") is not None:
        item = body.raw("MacAddress")
        if isinstance(item, dict):
            item = Fields(item).raw("Address", Fields(item).raw("Mac"))
        found.append(item)
    if not found:
        return None
    macs: list[str] = []
    for item in found:
        mac = macaddr.normalise(item)
        if mac not in macs:
            macs.append(mac)
    return tuple(macs)


def machine_fields(body: Fields, seal: Callable[[str], str]) -> machines.MachineFields:
    """What a machine body sets; a BMC password in it is sealed by *seal*
    before it goes anywhere."""
    name = body.str("Name")
    if name is not None and not name.strip():
        raise BadRequest("Name: must not be empty")
    arch = body.str("Architecture")
    if arch is not None:
        if arch.lower() not in ARCHITECTURES:
            raise BadRequest(f"Architecture: must be one of x86_64, arm64 (got {arch[:20]!r})")
        arch = ARCHITECTURES[arch.lower()]
    power = power_settings(body, seal)
    return machines.MachineFields(
        erase=choice(body, "Erase", erase.POLICIES),
        lease_end=choice(body, "LeaseEnd", LEASE_ENDS),
        lease_setup_uuid=body.str("LeaseSetupUUID", max_length=36),
        name=name.strip() if name else None,
        architecture=arch,
        managed=body.bool("Managed"),
        macs=_mac_list(body),
        power=power[0] if power else None,
        power_keep_password=power[1] if power else True,
    )


# GET /machines?… (pxed.db.hardware.Filters)
FILTERS = frozenset({"arch", "min_memory", "min_cpus", "disk_min_size"})


def _size(name: str, value: str | None) -> int | None:
    return None if value is None else inventory.size(name, value)


def hardware_filters(args: dict[str, str]) -> hardware.Filters:
    """``arch``, ``min_memory`` and ``disk_min_size`` (bytes, or with K, M,
    G, T: ``8G``), ``min_cpus``: GET /machines's query, POST /leases's
    Filter."""
    unknown = sorted(set(args) - FILTERS)
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown filter (known: {', '.join(sorted(FILTERS))})")
    arch = args.get("arch")
    if arch is not None and arch.lower() not in ARCHITECTURES:
        raise BadRequest(f"arch: one of x86_64, arm64 (got {arch[:20]!r})")
    return hardware.Filters(
        arch=ARCHITECTURES[arch.lower()] if arch is not None else None,
        min_memory=_size("min_memory", args.get("min_memory")),
        min_cpus=int_arg(args, "min_cpus", None),
        disk_min_size=_size("disk_min_size", args.get("disk_min_size")),
    )


class MachinesResource:
    def __init__(self, db: DBPool, store: ImageStore, power: PowerService) -> None:
        self._db = db
        self._store = store
        self._seal = power.seal

    @route("/machines", ["GET"], access="signed-in")
    async def list_machines(self, request: IRequest) -> list:
        """Every machine, or those whose inventory passes the filters:
        ``arch``, ``min_memory`` and ``disk_min_size`` (bytes, or with K,
        M, G, T: ``8G``), ``min_cpus``."""
        filters = hardware_filters(query_args(request))
        found = await self._db.read(machines.thd_list)
        if filters != hardware.Filters():
            admitted = await self._db.read(hardware.thd_matching, filters)
            found = [m for m in found if m.id in admitted]
        current = await self._db.read(progress.thd_for_machines)
        return [render.machine_with(m, current.get(m.id)) for m in found]

    @route("/machine/<mac>", ["GET"], access="signed-in")
    async def get_machine(self, request: IRequest, mac: str) -> dict:
        return await self._answer(await machine_or_404(self._db, mac))

    async def _answer(self, machine: machines.Machine) -> dict:
        """A machine as the machines routes answer it: with its Progress."""
        current = await self._db.read(progress.thd_for_machines, [machine.id])
        return render.machine_with(machine, current.get(machine.id))

    @route("/machine", ["POST"], access="admin")
    async def create_machine(self, request: IRequest) -> dict:
        fields = machine_fields(read_json(request), self._seal)
        if not fields.macs:
            raise BadRequest("MacAddresses: at least one MAC address is required")
        m, _ = await self._store.create_machine(fields, actor(request))
        request.setResponseCode(201)
        return await self._answer(m)

    @route("/machine", ["PUT"], access="admin")
    async def put_machine(self, request: IRequest) -> dict:
        fields = machine_fields(read_json(request), self._seal)
        if not fields.macs:
            raise BadRequest("MacAddresses: at least one MAC address is required")
        # 200 whether created or updated, as the original answered.
        m, _ = await self._store.create_machine(fields, actor(request), update_existing=True)
        return await self._answer(m)

    @route("/machine/<mac>", ["PUT"], access="admin")
    async def update_machine(self, request: IRequest, mac: str) -> dict:
        mac = macaddr.normalise(mac)
        fields = machine_fields(read_json(request), self._seal)
        m = await self._db.run(machines.thd_update, mac, fields, actor(request))
        return await self._answer(m)

    @route("/machine/<mac>", ["DELETE"], access="admin")
    async def delete_machine(self, request: IRequest, mac: str) -> str:
        mac = macaddr.normalise(mac)
        machine = await self._db.run(machines.thd_delete, mac, actor(request))
        await self._store.remove_image(machine.image_uuid)
        return "Successfully deleted"
