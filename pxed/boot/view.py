"""The boot view: what the boot routes answer from, in memory, and kept
current (pxed.boot.snapshot says what it holds).

A rack powering on at once asks ``/v1/boot`` and ``/ipxe`` thousands of
times a second; going to the database for each answer made the one
database thread the limit.  The view is loaded whole at start and loaded
again whenever something it holds may have changed:

- a write of this server that ``snapshot.DEPENDS`` names (DBPool tells it,
  from the writer thread, before the write's own Deferred fires: a client
  that saw its write succeed then sees it in the next boot answer);
- with PostgreSQL, such a write of another server (``NOTIFY``, sent in
  the writing transaction, so it arrives after the commit);
- every ``boot_view_refresh`` seconds anyway (an edit outside pxed, a
  credential that expired), in the background.

Log lines, progress reports and a machine's state or ``last_seen`` are
none of those: they reload nothing, here or on another server.

After a change, until a load that began after it has ended, the view is
*stale* for the machines the change concerns: their answers wait for that
load rather than answer from what may be old.  A change says which
machines it concerns when its writer did (pxed.db.written.concerning:
queueing and cancelling work); any other concerns every machine.  So
while work queued for a hundred machines is loaded, the other machines'
answers go on from memory; and when no change since the last load
concerns every machine, only the machines concerned are loaded
(``thd_load`` of them, put in the view with ``Snapshot.updated``).

Loads are coalesced: one at a time; a change that comes alone loads at
once, and changes coming in a burst (a rack's work queued by a script)
load once the burst has been quiet for ``QUIET`` seconds, or
``MAX_WAIT`` seconds after the first that no load has seen, whichever
is first -- unless an answer is waiting for them: then the load begins
at once (or when the one under way ends).  The quiet wait saves loads
no answer waits for; a rack powered on as its work is queued would
otherwise wait out every burst's tail.  Each completed load counts in
``pxed_boot_view_loads_total``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from pxed.boot.snapshot import DEPENDS, BootEntry, Snapshot, thd_load
from pxed.db import credentials
from pxed.db.pool import DBPool
from pxed.db.schema import utcnow
from pxed.metrics import Metrics

log = Logger()

# A change ISOLATED seconds after the one before loads at once; one
# sooner is part of a burst, loaded once the changes have been QUIET for
# that long, or MAX_WAIT seconds after the first no load has seen.
ISOLATED = 1.0
QUIET = 0.1
MAX_WAIT = 2.0


class BootView(Service):
    """The snapshot, its loads, and the credentials minted since the last."""

    name = "boot-view"

    def __init__(
        self, db: DBPool, key: bytes, reactor, refresh: float, metrics: Metrics | None = None
    ) -> None:
        self._db = db
        # The machine-credential key (pxed.boot.key), read once.
        self.key = key
        self._reactor = reactor
        self._metrics = metrics if metrics is not None else Metrics()
        self._refresh = refresh
        self._snapshot = Snapshot({})
        # Changes are numbered; a snapshot is as new as the changes made
        # before its load began.  The view is fresh when no change came
        # after that.
        self._changes = 1
        self._seen = 0
        # The last change that concerns any machine, and machine id -> the
        # last that concerns it (those no load has seen yet).
        self._global = 1
        self._concerning: dict[int, int] = {}
        self._loading: int | None = None  # the change count its load began at
        # The periodic refresh asks for a whole load (what changed outside
        # pxed concerns any machine); other loads are of the machines
        # concerned when no change since the last concerns every machine.
        self._whole = False
        self._last_change = float("-inf")
        self._burst = False  # the last change came within ISOLATED of the one before
        self._unseen_since: float | None = None  # the first change no load has seen
        self._timer: IDelayedCall | None = None
        # Credentials minted while a load ran: that load may have read the
        # database before they were stored, so they are applied to what it
        # brings (else the next answer would mint again, a write).
        self._minted_meanwhile: list[Callable[[Snapshot], None]] = []
        # (change count needed, Deferred) of answers waiting for a load
        self._waiting: list[tuple[int, Deferred[None]]] = []
        self._after_load: list[Callable[[Snapshot], None]] = []
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._db.watch(DEPENDS, self.changed)
        self._loop = LoopingCall(self._refresh_whole)
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
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
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

    def needed(self, mac: str) -> int:
        """The changes an answer for *mac* (normalised) needs the view to
        have seen: those that concern any machine, and its machine's."""
        entry = self._snapshot.by_mac.get(mac)
        if entry is None:
            return self._global
        # A change concerning only some machines moves no MAC to another
        # machine (that concerns every machine): the entry found is its own.
        return max(self._global, self._concerning.get(entry.machine.id, 0))

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

    def after_load(self, callback: Callable[[Snapshot], None]) -> None:
        """Call *callback* with each snapshot loaded, before the answers
        waiting for it go on (pxed.boot.minting mints what it lacks)."""
        self._after_load.append(callback)

    def ready(self, needed: int | None = None) -> Deferred[None]:
        """Fires once the view has seen *needed* changes (default: every
        change made before this call)."""
        needed = self._changes if needed is None else needed
        if self._seen >= needed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append((needed, d))
        self._schedule()
        return d

    # -- keeping current

    def changed(self, written: Iterable[str] = ()) -> None:
        """Something the view holds may have changed: load it again before
        the next answer (for the machines *written* concerns, if it says:
        pxed.db.written.Written)."""
        self._changes += 1
        machines = getattr(written, "machines", None)
        if machines is None:
            self._global = self._changes
        else:
            for machine_id in machines:
                self._concerning[machine_id] = self._changes
        now = self._reactor.seconds()
        self._burst = now - self._last_change < ISOLATED
        self._last_change = now
        if self._unseen_since is None:
            self._unseen_since = now
        self._schedule()

    def _schedule(self) -> None:
        """Begin a load now, after a change that came alone or one an
        answer waits for, or once a burst of changes has been quiet (QUIET,
        at most MAX_WAIT)."""
        if not self.running or self.fresh or self._loading is not None:
            return  # the load under way schedules the next when it ends
        now = self._reactor.seconds()
        due = now
        if self._burst and not self._waiting:
            since = now if self._unseen_since is None else self._unseen_since
            due = min(self._last_change + QUIET, since + MAX_WAIT)
        if due <= now:
            self._load()
        elif self._timer is None:
            self._timer = self._reactor.callLater(due - now, self._due)
        else:
            self._timer.reset(due - now)

    def _due(self) -> None:
        self._timer = None
        self._load()

    def _refresh_whole(self) -> None:
        self._whole = True
        self._load()

    def _load(self) -> None:
        if self._loading is not None or not self.running:
            return
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        # Work queued for a rack concerns its machines: loading those alone
        # keeps their first answers' wait (and the GIL the load holds while
        # the rack asks) to a few rows, not every machine of the site.
        machines = None
        if not self._whole and self._global <= self._seen:
            machines = {m for m, n in self._concerning.items() if n > self._seen}
        self._whole = False
        self._loading = self._changes
        self._unseen_since = None
        d = self._db.read(thd_load, self.key, machines)
        d.addCallbacks(self._loaded, self._failed, callbackArgs=(machines,))

    def _loaded(self, snapshot: Snapshot, machines: set[int] | None = None) -> None:
        began, self._loading = self._loading, None
        assert began is not None
        self._metrics.boot_view_loads.inc()
        if machines is not None:
            snapshot = self._snapshot.updated(snapshot, machines)
        for apply in self._minted_meanwhile:
            apply(snapshot)
        self._minted_meanwhile.clear()
        self._snapshot = snapshot
        self._seen = began
        self._concerning = {m: n for m, n in self._concerning.items() if n > began}
        for callback in self._after_load:
            callback(snapshot)
        waiting, self._waiting = self._waiting, []
        for needed, d in waiting:
            if needed <= began:
                d.callback(None)
            else:
                self._waiting.append((needed, d))
        # Changes that came while it loaded.
        self._schedule()

    def _failed(self, failure: Failure) -> None:
        self._loading = None
        self._minted_meanwhile.clear()  # still in the snapshot kept
        log.failure("loading the boot view", failure)
        # Waiting answers fail (the database is not answering); the next
        # answer or change tries again.
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            d.errback(failure)
