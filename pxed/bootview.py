"""What the boot routes answer from: every machine by MAC, with the work a
netboot now would do and that work's credential, in memory.

A rack powering on at once asks ``/v1/boot`` and ``/ipxe`` thousands of
times a second; going to the database for each answer made the one
database thread the limit.  The view is loaded whole at start and loaded
again whenever something it holds may have changed:

- a write of this server to a table it is built from (DBPool tells it,
  from the writer thread, before the write's own Deferred fires: a client
  that saw its write succeed then sees it in the next boot answer);
- with PostgreSQL, a write of another server (``NOTIFY pxed_boot``, sent
  in the writing transaction, so it arrives after the commit);
- every ``boot_view_refresh`` seconds anyway (an edit outside pxed, a
  credential that expired), in the background.

After a change, until a load that began after it has ended, the view is
*stale*: answers wait for that load rather than answer from what may be
old.  Loads are coalesced: one at a time, and
changes during a load make one more."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from pxed.db import credentials, enlist, queue
from pxed.db import machines as machines_db
from pxed.db.machines import Machine
from pxed.db.pool import DBPool
from pxed.db.queue import CurrentWork
from pxed.db.schema import utcnow

log = Logger()


# The tables a boot answer depends on (``table:kind`` for one kind of
# write only).  A new credential is not a change: one minted here goes into
# the view at once (``minted``), one minted by another server is found
# again by the next mint here (the same token); a revoked or deleted one is.
TABLES = frozenset(
    {
        "machines",
        "machine_macs",
        "boot_setups",
        "boot_setup_images",
        "machine_credentials:update",
        "machine_credentials:delete",
        "enlist_credentials:update",
        "enlist_credentials:delete",
    }
)


@dataclass(frozen=True)
class BootEntry:
    machine: Machine
    # In progress, else the oldest queued: what a netboot now would do.
    work: CurrentWork | None

    @property
    def scope(self) -> frozenset[str]:
        """The images its credential may read and write."""
        found = {self.machine.image_uuid}
        if self.work is not None:
            found |= set(self.work.image_uuids)
        return frozenset(found)

    @property
    def work_id(self) -> int | None:
        return None if self.work is None else self.work.id


@dataclass(frozen=True)
class Snapshot:
    by_mac: dict[str, BootEntry]
    # (machine id, work id) -> (token, expiry) of each live credential
    tokens: dict[tuple[int, int | None], tuple[str, dt.datetime]] = field(default_factory=dict)
    # MAC -> (token, expiry) of each live enlistment credential
    enlisting: dict[str, tuple[str, dt.datetime]] = field(default_factory=dict)
    # Machines that enlisted and wait for an admin (they count towards
    # max_enlisting with the live enlistment credentials).
    waiting: int = 0
    # MACs refused an enlistment credential since this snapshot was read
    # (max_enlisting reached): answered "local disk" without asking again.
    refused: set[str] = field(default_factory=set)


def thd_load(conn: sa.Connection, key: bytes) -> Snapshot:
    """Every machine, its current work and the live credentials, in one
    read transaction (one snapshot)."""
    current = queue.thd_current_all(conn)
    by_mac = {}
    for machine in machines_db.thd_list(conn):
        entry = BootEntry(machine, current.get(machine.id))
        for mac in machine.macs:
            by_mac[mac] = entry
    return Snapshot(
        by_mac,
        credentials.thd_live_tokens(conn, key),
        enlist.thd_live_tokens(conn, key),
        enlist.thd_waiting(conn),
    )


class BootView(Service):
    """The snapshot, its loads, and the credentials minted since the last."""

    name = "boot-view"

    def __init__(self, db: DBPool, key: bytes, reactor, refresh: float) -> None:
        self._db = db
        # The machine-credential key (pxed.bootstrap.machine_key), read once.
        self.key = key
        self._reactor = reactor
        self._refresh = refresh
        self._snapshot = Snapshot({})
        # Changes are numbered; a snapshot is as new as the changes made
        # before its load began.  The view is fresh when no change came
        # after that.
        self._changes = 1
        self._seen = 0
        self._loading: int | None = None  # the change count its load began at
        # Credentials minted while a load ran: that load may have read the
        # database before they were stored, so they are applied to what it
        # brings (else the next answer would mint again, a write).
        self._minted_meanwhile: list[Callable[[Snapshot], None]] = []
        # (change count needed, Deferred) of answers waiting for a load
        self._waiting: list[tuple[int, Deferred[None]]] = []
        self._loop: LoopingCall | None = None
        self.loads = 0  # loads since start (tests, metrics)

    def startService(self) -> None:
        super().startService()
        self._db.watch(TABLES, self.changed)
        self._loop = LoopingCall(self._load)
        self._loop.clock = self._reactor
        # Its first call is now: the initial load.  The later ones load in
        # the background: no change is known, answers need not wait (and
        # with the database away they go on from the view as it is).
        self._loop.start(self._refresh, now=True).addErrback(
            lambda f: log.failure("boot view refresh", f)
        )

    def stopService(self) -> None:
        super().stopService()
        self._db.unwatch(self.changed)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            d.errback(Failure(RuntimeError("pxed is stopping")))

    # -- answering

    @property
    def changes(self) -> int:
        """Changes so far: an answer needs a view that has seen this many."""
        return self._changes

    @property
    def seen(self) -> int:
        """Changes made before the snapshot held now was read."""
        return self._seen

    @property
    def fresh(self) -> bool:
        return self._seen == self._changes

    def get(self, mac: str) -> BootEntry | None:
        return self._snapshot.by_mac.get(mac)

    def token(self, entry: BootEntry) -> str | None:
        """The live credential of the entry's work, if one was minted and
        is not about to expire (None: mint one)."""
        found = self._snapshot.tokens.get((entry.machine.id, entry.work_id))
        if found is None:
            return None
        token, expires = found
        # Not one that ends before the management OS has booted.
        if expires - utcnow() < credentials.FRESH:
            return None
        return token

    def minted(self, entry: BootEntry, token: str, expires: dt.datetime) -> None:
        def apply(snapshot: Snapshot) -> None:
            snapshot.tokens[(entry.machine.id, entry.work_id)] = (token, expires)

        self._apply_mint(apply)

    def _apply_mint(self, apply: Callable[[Snapshot], None]) -> None:
        apply(self._snapshot)
        if self._loading is not None:
            self._minted_meanwhile.append(apply)

    # -- enlistment (unknown MACs, config enlist)

    def enlist_token(self, mac: str) -> str | None:
        """The live enlistment credential of *mac*, unless about to expire."""
        found = self._snapshot.enlisting.get(mac)
        if found is None or found[1] - utcnow() < credentials.FRESH:
            return None
        return found[0]

    def enlist_refused(self, mac: str, limit: int) -> bool:
        """Whether *mac* would be refused one: *limit* machines are
        enlisting or waiting, or the database said no since the last load."""
        snapshot = self._snapshot
        return mac in snapshot.refused or len(snapshot.enlisting) + snapshot.waiting >= limit

    def enlist_minted(self, mac: str, found: tuple[str, dt.datetime] | None) -> None:
        def apply(snapshot: Snapshot) -> None:
            if found is None:
                if len(snapshot.refused) >= 4096:
                    snapshot.refused.clear()
                snapshot.refused.add(mac)
            else:
                snapshot.enlisting[mac] = found

        self._apply_mint(apply)

    def ready(self, needed: int | None = None) -> Deferred[None]:
        """Fires once the view has seen *needed* changes (default: every
        change made before this call)."""
        needed = self._changes if needed is None else needed
        if self._seen >= needed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append((needed, d))
        self._load()
        return d

    # -- keeping current

    def changed(self, _tables: Iterable[str] = ()) -> None:
        """Something the view holds may have changed: load it again before
        the next answer."""
        self._changes += 1
        self._load()

    def _load(self) -> None:
        if self._loading is not None or not self.running:
            return
        self._loading = self._changes
        d = self._db.read(thd_load, self.key)
        d.addCallbacks(self._loaded, self._failed)

    def _loaded(self, snapshot: Snapshot) -> None:
        began, self._loading = self._loading, None
        assert began is not None
        self.loads += 1
        for apply in self._minted_meanwhile:
            apply(snapshot)
        self._minted_meanwhile.clear()
        self._snapshot = snapshot
        self._seen = began
        waiting, self._waiting = self._waiting, []
        for needed, d in waiting:
            if needed <= began:
                d.callback(None)
            else:
                self._waiting.append((needed, d))
        if not self.fresh:
            # Changes came while it loaded.
            self._load()

    def _failed(self, failure: Failure) -> None:
        self._loading = None
        self._minted_meanwhile.clear()  # still in the snapshot kept
        log.failure("loading the boot view", failure)
        # Waiting answers fail (the database is not answering); the next
        # answer or change tries again.
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            d.errback(failure)
