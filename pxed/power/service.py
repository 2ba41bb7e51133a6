"""The one way pxed drives a machine's power: every action goes through
``PowerService``, which picks the machine's driver, opens its password,
bounds each call by ``power_timeout`` and ``power_retries``, and writes
the action, who asked and how it went to the machine's events.

Two callers: operators (``POST /machine/{mac}/power``: the answer waits
for the BMC, and a failure is a 502 or 504), and the provisioning flow
(queueing work, completing it: the action runs in the background, off the
request, and its result is only an event)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from pxed.db import power as power_db
from pxed.db.machines import Machine
from pxed.db.pool import DBPool
from pxed.errors import BadGateway, Conflict, GatewayTimeout
from pxed.power import PowerDriver, PowerError, PowerTimeout, State
from pxed.power.ipmi import IPMIDriver, IPMIPool
from pxed.power.redfish import RedfishDriver, make_client
from pxed.power.secretbox import SealError, SecretBox

log = Logger()

Action = Literal["on", "off", "cycle"]
# Seconds between a failed attempt and the next.
RETRY_DELAY = 1.0


class PowerService(MultiService):
    name = "power"

    def __init__(self, db: DBPool, key: bytes, reactor, timeout: float, retries: int) -> None:
        super().__init__()
        self._db = db
        self._box = SecretBox(key)
        self._reactor = reactor
        self._timeout = timeout
        self._retries = retries
        self._ipmi = IPMIPool(reactor)
        self._ipmi.setServiceParent(self)
        self._clients = {True: make_client(reactor, True), False: make_client(reactor, False)}
        # The flow's actions under way (stopping cancels them).
        self._background: set[Deferred] = set()

    def seal(self, password: str) -> str:
        """A BMC password as the database keeps it."""
        return self._box.seal(password)

    def stopService(self) -> Deferred[None]:
        for d in list(self._background):
            d.cancel()
        return super().stopService()

    # -- operators -----------------------------------------------------------

    async def act(self, machine: Machine, action: Action, who: str) -> State:
        """Power *machine* on, off or cycle it now; its state afterwards.
        Raises Conflict (no driver), BadGateway or GatewayTimeout."""
        driver = self.driver(machine)
        try:
            await self._bounded(lambda: _ACTIONS[action](driver))
        except PowerError as e:
            await self._record(machine, who, action, f"failed: {e}")
            raise _api_error(e) from None
        state = await self._state_or_unknown(driver)
        await self._record(machine, who, action, f"ok; now {state}")
        return state

    async def state(self, machine: Machine) -> State:
        driver = self.driver(machine)
        try:
            return await self._bounded(driver.state)
        except PowerError as e:
            raise _api_error(e) from None

    # -- the provisioning flow -------------------------------------------------

    def start_work(self, machine: Machine, mode: str, work_id: int, who: str) -> None:
        """After *who* queued work with Power on or cycle: the next boot
        from the network, then the power, in the background.  A failure
        leaves the work queued (the machine takes it whenever it netboots)
        and says so in the events."""
        if mode == "none" or not machine.power.enabled:
            return
        self._spawn(self._start(machine, mode, work_id, who))

    def after_work(self, machine: Machine, after: str, work_id: int) -> None:
        """Once work is complete: reboot to the disk or power off."""
        if after == "none" or not machine.power.enabled:
            return
        self._spawn(self._after(machine, after, work_id))

    def power_off(self, machine: Machine, tag: str) -> None:
        """Power the machine off in the background (a lease's end), where
        pxed has its power; the outcome is an event."""
        if not machine.power.enabled:
            return
        self._spawn(self._step(machine, "pxed", "off", tag, "power_off"))

    async def _start(self, machine: Machine, mode: str, work_id: int, who: str) -> None:
        tag = f"work={work_id}"
        if not await self._step(machine, who, "bootdev", f"{tag} pxe once", "boot_once", "pxe"):
            return
        driver = self.driver(machine)
        if mode == "on":
            try:
                state = await self._bounded(driver.state)
            except PowerError:
                state = "unknown"
            if state == "on":
                detail = f"{tag}: already on; it netboots when it next boots"
                await self._record(machine, who, "on", detail)
                return
        await self._step(machine, who, mode, tag, "power_on" if mode == "on" else "power_cycle")

    async def _after(self, machine: Machine, after: str, work_id: int) -> None:
        tag = f"work={work_id}"
        if after == "poweroff":
            await self._step(machine, "pxed", "off", tag, "power_off")
            return
        if await self._step(machine, "pxed", "bootdev", f"{tag} disk once", "boot_once", "disk"):
            await self._step(machine, "pxed", "cycle", tag, "power_cycle")

    async def _step(
        self, machine: Machine, who: str, action: str, tag: str, method: str, *args: str
    ) -> bool:
        """One action of the flow, recorded; whether it worked."""
        try:
            driver = self.driver(machine)
            await self._bounded(lambda: getattr(driver, method)(*args))
        except (PowerError, Conflict) as e:
            await self._record(machine, who, action, f"{tag}: failed: {e}")
            return False
        await self._record(machine, who, action, f"{tag}: ok")
        return True

    def _spawn(self, work: Awaitable[None]) -> None:
        d = Deferred.fromCoroutine(work)  # type: ignore[arg-type]
        self._background.add(d)

        def done(result: object) -> None:
            self._background.discard(d)
            # Failures of the BMC are events (_step); anything else is a bug.
            if isinstance(result, Failure) and not result.check(CancelledError):
                log.failure("power action in the background", result)

        d.addBoth(done)

    # -- drivers, bounds, events ---------------------------------------------

    def driver(self, machine: Machine) -> PowerDriver:
        settings = machine.power
        if not settings.enabled:
            raise Conflict(
                "the machine has no power driver: PUT /machine/{mac} with"
                ' Power {"Driver": "redfish"|"ipmi", "Address", ...}'
            )
        try:
            password = self._box.open(settings.password_sealed)
        except SealError as e:
            raise Conflict(str(e)) from None
        if settings.driver == "redfish":
            return RedfishDriver(
                self._clients[settings.verify_tls],
                settings.address,
                settings.username,
                password,
                settings.system,
                self._timeout,
            )
        return IPMIDriver(self._ipmi, settings.address, settings.username, password)

    async def _bounded(self, call: Callable[[], Awaitable]):
        """*call* with the timeout, tried again up to power_retries times."""
        attempts = 1 + self._retries
        for attempt in range(1, attempts + 1):
            d = Deferred.fromCoroutine(_await(call))
            d.addTimeout(self._timeout, self._reactor)
            try:
                return await d
            except TimeoutError:
                failure: PowerError = PowerTimeout(
                    f"no answer from the BMC within {self._timeout:g} s"
                )
            except PowerError as e:
                failure = e
            if attempt == attempts:
                if attempts > 1:
                    raise type(failure)(f"{failure} (after {attempts} attempts)")
                raise failure
            await deferLater(self._reactor, RETRY_DELAY, lambda: None)
        raise AssertionError("unreachable")

    async def _state_or_unknown(self, driver: PowerDriver) -> State:
        try:
            d = Deferred.fromCoroutine(_await(driver.state))
            d.addTimeout(self._timeout, self._reactor)
            return await d
        except (PowerError, TimeoutError):
            return "unknown"

    async def _record(self, machine: Machine, who: str, action: str, outcome: str) -> None:
        await self._db.run(power_db.thd_record, machine.id, who, action, outcome)


async def _await(call: Callable[[], Awaitable]):
    return await call()


_ACTIONS: dict[str, Callable[[PowerDriver], Awaitable[None]]] = {
    "on": lambda d: d.power_on(),
    "off": lambda d: d.power_off(),
    "cycle": lambda d: d.power_cycle(),
}


def _api_error(e: PowerError) -> BadGateway | GatewayTimeout:
    if isinstance(e, PowerTimeout):
        return GatewayTimeout(f"power: {e}")
    return BadGateway(f"power: {e}")
