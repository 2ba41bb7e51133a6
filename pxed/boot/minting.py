"""Machine credentials minted in batches, and ahead of the answers.

A rack is powered on right after its work is queued (pxed does it itself):
if each machine's first answer minted its credential, a hundred first
answers would be a hundred writes, each answer waiting for its own behind
the others.  Instead the view's every load (pxed.boot.view, which loads
after work is queued) asks here for the credentials of the works it holds
and has none for, and those are minted at once in one write, before the
machines ask; an answer that still finds none (it came first, or under
the ``always`` policy) waits for that write, or joins the next.  While a
write is under way the works asked for meanwhile wait for the next, so
there is one write at a time, each for every work then wanted."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pxed.boot.credentials import Credentials
from pxed.boot.snapshot import BootEntry, Snapshot
from pxed.boot.view import BootView

log = Logger()

Key = tuple[int, int | None]  # (machine id, work id)


class Batch:
    def __init__(self) -> None:
        self.entries: dict[Key, BootEntry] = {}
        self.waiting: list[Deferred[None]] = []

    def wait(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiting.append(d)
        return d

    def done(self, failure: Failure | None = None) -> None:
        for d in self.waiting:
            if failure is None:
                d.callback(None)
            else:
                d.errback(failure)


class WorkMints:
    def __init__(self, credentials: Credentials, view: BootView) -> None:
        self._credentials = credentials
        self._view = view
        self._writing: Batch | None = None
        self._next = Batch()
        view.after_load(self._ahead)

    def mint(self, entry: BootEntry) -> Deferred[None]:
        """Fires once the credential of *entry*'s work is in the view (or
        the work turned out to have ended)."""
        key = (entry.machine.id, entry.work_id)
        if self._writing is not None and key in self._writing.entries:
            return self._writing.wait()
        self._next.entries[key] = entry
        d = self._next.wait()
        if self._writing is None:
            self._write()
        return d

    def _ahead(self, snapshot: Snapshot) -> None:
        """After a load: mint what the works it holds will be answered with."""
        wanted = {
            id(e): e
            for e in snapshot.by_mac.values()
            if e.work is not None and e.machine.managed and self._view.token(e) is None
        }
        for entry in wanted.values():
            self.mint(entry).addErrback(lambda f: None)  # logged once, by _write

    def _write(self) -> None:
        batch, self._next = self._next, Batch()
        self._writing = batch

        def finished(result: dict[Key, tuple] | Failure) -> None:
            # No longer under way before anyone waiting goes on (and may ask again).
            self._writing = None
            if isinstance(result, Failure):
                log.warn(
                    "minting {count} machine credentials: {error}",
                    count=len(batch.entries),
                    error=result.getErrorMessage(),
                )
                batch.done(result)
            else:
                for key, (token, expires) in result.items():
                    self._view.minted(batch.entries[key], token, expires)
                batch.done()
            if self._next.entries:
                self._write()

        d = Deferred.fromCoroutine(self._credentials.for_works(list(batch.entries.values())))
        d.addBoth(finished)
