"""The netboot answer, for pixiecore (/v1/boot/{mac}) and iPXE (/ipxe)."""

from __future__ import annotations

import datetime as dt

from twisted.web.iweb import IRequest

from pxed import bootconfig, macaddr
from pxed.config import Config
from pxed.db import credentials, events, machines, queue
from pxed.db.pool import DBPool
from pxed.errors import BadRequest, NotFound
from pxed.metrics import Metrics
from pxed.web.auth import actor
from pxed.web.origin import Origin
from pxed.web.router import route


class BootResource:
    def __init__(
        self, db: DBPool, config: Config, origin: Origin, machine_key: bytes, metrics: Metrics
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._config = config
        self._origin = origin
        self._networks = bootconfig.networks(config.boot_networks)
        # pxed.bootstrap.machine_key: read once, before any request.
        self._key = machine_key

    async def _answer(
        self, request: IRequest, mac: str, via: str
    ) -> tuple[bootconfig.Decision, bootconfig.BootParams | None]:
        try:
            mac = macaddr.normalise(mac)
        except BadRequest:
            return bootconfig.Decision(False, "not a MAC address"), None
        address = bootconfig.client_address(request)
        machine = await self._db.read(machines.thd_get, mac)
        if bootconfig.on_boot_network(address, self._networks):
            decision, params = await self._decide(request, machine, mac)
        else:
            # Netboot is unauthenticated: only the networks machines boot
            # from are answered; elsewhere the same answer as an unknown MAC.
            decision, params = bootconfig.Decision(False, "client not on a boot network"), None
        self._metrics.boot_answered(machine is not None, params is not None)
        if machine is not None:
            # "Why did this MAC get this answer": the machine's event log
            # says each answer that differs from the one before; repeats
            # are counted in that event.
            served = "management OS" if params is not None else "local disk"
            await self._db.run(
                events.thd_record_change,
                actor(request),
                "boot.answer",
                "machine",
                str(machine.id),
                f"{served}: {decision.reason}",
                f"last asked via {via} for {mac} from {address or '-'}",
            )
        return decision, params

    async def _decide(
        self, request: IRequest, machine: machines.Machine | None, mac: str
    ) -> tuple[bootconfig.Decision, bootconfig.BootParams | None]:
        # The queue entry a boot now would run (in progress, else oldest).
        work = None if machine is None else await self._db.run(queue.thd_current, machine.id)
        decision = bootconfig.decide(machine, self._config.boot_policy, work is not None)
        if not decision.serve:
            return decision, None
        files = self._config.mgmtos.get(machine.architecture)
        if files is None:
            return bootconfig.Decision(False, f"no management OS for {machine.architecture}"), None
        base = self._origin.base_url(request)
        token = await self._credential(machine, work)
        return decision, bootconfig.params(files, base, mac, token)

    async def _credential(self, machine: machines.Machine, work: queue.Work | None) -> str:
        """The credential for the management OS: one per work item, minted
        on the first answer that serves it and the same in every later one
        (pixiecore and iPXE ask several times per boot), scoped to the
        machine's own image and the images of *work*, gone with the work."""
        scope = {machine.image_uuid}
        if work is not None:
            scope |= {i.image_uuid for i in work.images}
        lifetime = dt.timedelta(hours=self._config.machine_token_hours)
        return await self._db.run(
            credentials.thd_for_answer,
            self._key,
            machine.id,
            None if work is None else work.id,
            frozenset(scope),
            lifetime,
        )

    @route("/v1/boot/<mac>", ["GET"], access="public")
    async def pixiecore_boot(self, request: IRequest, mac: str) -> dict:
        decision, params = await self._answer(request, mac, "pixiecore")
        if params is None:
            # pixiecore reads a 404 as "ignore this machine": it boots locally.
            raise NotFound(decision.reason)
        return bootconfig.pixiecore(params, f"pxed: {decision.reason}")

    @route("/ipxe/<mac>", ["GET"], access="public")
    async def ipxe_boot(self, request: IRequest, mac: str) -> str:
        decision, params = await self._answer(request, mac, "ipxe")
        if params is None:
            return bootconfig.ipxe_exit(decision.reason)
        return bootconfig.ipxe_boot(params, decision.reason)

    @route("/ipxe", ["GET"], access="public")
    async def ipxe_chain(self, request: IRequest) -> str:
        return bootconfig.ipxe_chain(self._origin.base_url(request))
