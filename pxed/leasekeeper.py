"""The lease keeper: every ``lease_check_interval`` seconds, and once at
start (a lease that ended while pxed was down is ended then), it

- tells each holder ``lease_warning_minutes`` before the end (a
  ``lease.ending`` event: on the machine's events and the event stream);
- ends each lease whose time is up (``lease.end``), cancels its holder's
  work still queued on the machine, and does what the machine's
  ``LeaseEnd`` says: power it off, or queue its ``LeaseSetupUUID`` (the
  setup's owner's work, so the erase policy cleans the holder's disks
  before it is written), or nothing;
- cancels other users' work queued on a machine under a running lease
  (staff's stays).

Each transition is made where the row still is as it was seen
(pxed.db.leases), so with two servers each happens once."""

from __future__ import annotations

import datetime as dt

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pxed.boot.credentials import Credentials
from pxed.db import leases, machines, queue, setups
from pxed.db.pool import DBPool
from pxed.db.schema import utcnow
from pxed.db.written import concerning
from pxed.power.service import PowerService

log = Logger()
ACTOR = "pxed"


class LeaseKeeper(Service):
    name = "leases"

    def __init__(
        self,
        db: DBPool,
        credentials: Credentials,
        power: PowerService,
        reactor,
        interval: float = 30.0,
        warn_before: dt.timedelta = dt.timedelta(minutes=15),
    ) -> None:
        self._db = db
        self._credentials = credentials
        self._power = power
        self._reactor = reactor
        self._interval = interval
        self._warn_before = warn_before
        self._loop: LoopingCall | None = None
        self._looking: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=True)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        # A look under way finishes before the pools stop.
        return self._looking if self._looking is not None else succeed(None)

    def _tick(self) -> None:
        if self._looking is not None:
            return  # the last look is still going: a slow database
        d = Deferred.fromCoroutine(self.look())
        self._looking = d

        def done(result: object) -> None:
            self._looking = None
            if hasattr(result, "getTraceback"):
                log.failure("looking at the leases", result)  # type: ignore[arg-type]

        d.addBoth(done)

    async def look(self, now: dt.datetime | None = None) -> None:
        """One look at the leases (the loop's; tests call it too)."""
        now = now or utcnow()
        due = await self._db.read(leases.thd_due, now, self._warn_before)
        for lease_id, machine_id in due.warn:
            await self._db.run(concerning(machine_id, leases.thd_warn), lease_id, now, ACTOR)
        for lease_id, machine_id in due.end:
            await self._end(lease_id, machine_id, now)
        for lease_id, machine_id in due.running:
            await self._db.run(concerning(machine_id, leases.thd_hold_off), lease_id, ACTOR)

    async def _end(self, lease_id: int, machine_id: int, now: dt.datetime) -> None:
        enqueue = self._credentials.ahead(queue.thd_enqueue)

        def thd(conn):
            lease = leases.thd_end(conn, lease_id, now, ACTOR)
            if lease is None:
                return None, None
            machine = machines.thd_by_id(conn, machine_id)
            work = None
            if machine.lease_end == "reimage" and machine.lease_setup_uuid:
                setup = setups.thd_get(conn, machine.lease_setup_uuid)
                if setup is not None and setup.entries:
                    work = enqueue(
                        conn, machine_id, setup, False, setup.owner, ACTOR, machine.power.after
                    )
            return machine, work

        machine, work = await self._db.run(concerning(machine_id, thd))
        if machine is None:
            return  # another server ended it
        tag = f"lease={lease_id}"
        if work is not None:
            self._power.start_work(machine, machine.power.on_queue, work.id, ACTOR)
        elif machine.lease_end in ("poweroff", "reimage"):
            # A re-image whose setup is gone or empty powers off instead.
            self._power.power_off(machine, tag)
