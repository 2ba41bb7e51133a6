"""The event log's record of boot answers, kept off the answers' path.

"Why did this MAC get this answer" is in each machine's events: an answer
that differs from the machine's previous one is written at once (after
the answer has gone); repeats of the same answer are counted in memory
and added to that event's count every ``interval`` seconds, in one write.
The first answer that serves a work adds ``work.netboot`` to the work's
timeline (once per work: its credential is minted ahead, pxed.boot.view).

Writes go one after another, so a machine's events keep their order, and
what comes while one is under way goes in the next (up to
``WRITE_AT_MOST`` in one transaction): a rack's first answers after a
start (a change for every machine) are a few writes, not one per
machine, and leave the database's writer to what answers wait for."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pxed.db import events
from pxed.db.pool import DBPool

log = Logger()

# Answers and works served written in one transaction, at most.
WRITE_AT_MOST = 100


@dataclass(frozen=True)
class Answer:
    machine_id: int
    actor: str
    key: str  # what was answered and why: a change starts a new event
    more: str  # how it was asked (kept from the last one)
    times: int = 1

    @property
    def detail(self) -> str:
        return f"{self.key}; {self.more}" if self.more else self.key


@dataclass(frozen=True)
class Served:
    """The first answer that served *work_id* to the machine."""

    machine_id: int
    work_id: int

    @property
    def event(self) -> tuple[str, str]:
        """The target and detail of its ``work.netboot`` event."""
        return str(self.machine_id), f"work={self.work_id}"


@dataclass(frozen=True)
class Answers:
    """Answers to write, with the event ids their repeats go to."""

    answers: list[Answer]
    rows: dict[int, int]


Write = Answers | Served


@dataclass(frozen=True)
class _New:
    """A row this write adds: its index among the inserted ones."""

    index: int


def thd_write(conn: sa.Connection, writes: list[Write]) -> list[dict[int, int]]:
    """Each of *writes* in order, in one transaction: for each, the event
    ids of its machines' answers (machine id -> event id; none for ``Served``).

    A rack's first answers are a change for every machine: what they
    change is looked up in one statement, and the rows they add are
    inserted in one and their counts added in another, rather than two
    statements a machine (the database thread holds the GIL against the
    reactor answering the rack while it builds each)."""
    asked = {
        a.machine_id
        for w in writes
        if isinstance(w, Answers)
        for a in w.answers
        if a.machine_id not in w.rows
    }
    # machine id -> the event its last answer is in: a row id, or a new row
    last: dict[int, int | _New] = {}
    details: dict[int | _New, str] = {}
    for row, machine_id, detail in _thd_last_answers(conn, asked):
        last[machine_id], details[row] = row, detail
    served = events.thd_details_of(
        conn, "work.netboot", "machine", {w.event for w in writes if isinstance(w, Served)}
    )
    new: list[dict] = []
    repeats: dict[int, dict] = {}  # row id -> what its count gets

    def add(row: int | _New, a: Answer) -> None:
        details[row] = a.detail
        if isinstance(row, _New):
            values = new[row.index]
            values.update(count=values["count"] + a.times, actor=a.actor, detail=a.detail)
            values["last_at"] = values["at"]
            return
        held = repeats.get(row)
        times = a.times + (held["times"] if held else 0)
        repeats[row] = {"row": row, "times": times, "actor": a.actor, "detail": a.detail}

    def insert(actor: str, action: str, target: str, detail: str, count: int) -> _New:
        new.append(events.new_row(actor, action, "machine", target, detail, count))
        return _New(len(new) - 1)

    found: list[dict[int, int | _New]] = []
    for w in writes:
        rows: dict[int, int | _New] = {}
        found.append(rows)
        if isinstance(w, Served):
            if w.event not in served:
                served.add(w.event)
                insert("system", "work.netboot", *w.event, 1)
            continue
        for a in w.answers:
            row = w.rows.get(a.machine_id, last.get(a.machine_id))
            if row is not None and (a.machine_id in w.rows or events.says(details[row], a.key)):
                add(row, a)
            else:
                row = insert(a.actor, "boot.answer", str(a.machine_id), a.detail, a.times)
                details[row] = a.detail
            last[a.machine_id] = rows[a.machine_id] = row
    ids = events.thd_insert_many(conn, new)
    events.thd_add_repeats(conn, list(repeats.values()))
    return [
        {m: ids[row.index] if isinstance(row, _New) else row for m, row in rows.items()}
        for rows in found
    ]


def _thd_last_answers(conn: sa.Connection, machines: set[int]) -> list[tuple[int, int, str]]:
    """(event id, machine id, detail) of each machine's last answer."""
    found = events.thd_last_of(conn, "boot.answer", "machine", [str(m) for m in machines])
    return [(row, int(target), detail) for row, target, detail in found]


class AnswerLog(Service):
    name = "boot-answers"

    def __init__(self, db: DBPool, reactor, interval: float = 5.0) -> None:
        self._db = db
        self._reactor = reactor
        self._interval = interval
        self._last: dict[int, str] = {}  # machine id -> key of its last answer
        # machine id -> id of the event its last answer is counted in, once
        # written (until then its repeats go the slower way, by key)
        self._rows: dict[int, int] = {}
        self._pending: dict[int, Answer] = {}  # repeats not yet written
        self._served: dict[int, int] = {}  # machine id -> the work last served
        self._queued: list[Write] = []  # for the next write, in order
        self._writing = False
        self._drained: list[Deferred[None]] = []  # fired when nothing is left to write
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.flush)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=False)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        # What was counted is written before the database pool stops.
        self.flush()
        if not self._writing:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return d

    def record(
        self, machine_id: int, actor: str, key: str, more: str, work_id: int | None = None
    ) -> None:
        """An answer to the machine (*work_id*: the work it serves)."""
        if work_id is not None and self._served.get(machine_id) != work_id:
            self._served[machine_id] = work_id
            self._write(Served(machine_id, work_id))
        if self._last.get(machine_id) == key:
            held = self._pending.get(machine_id)
            self._pending[machine_id] = Answer(
                machine_id, actor, key, more, 1 if held is None else held.times + 1
            )
            return
        self._last[machine_id] = key
        batch = [self._pending.pop(machine_id)] if machine_id in self._pending else []
        # The pending repeats belong to the old event, the answer to a new.
        old = self._rows.pop(machine_id, None)
        if batch and old is not None:
            self._write(Answers(batch, {machine_id: old}))
            batch = []
        self._write(Answers([*batch, Answer(machine_id, actor, key, more)], {}))

    def flush(self) -> None:
        batch, self._pending = list(self._pending.values()), {}
        if batch:
            self._write(
                Answers(
                    batch,
                    {
                        a.machine_id: self._rows[a.machine_id]
                        for a in batch
                        if a.machine_id in self._rows
                    },
                )
            )

    def _write(self, write: Write) -> None:
        self._queued.append(write)
        if not self._writing:
            self._next()

    def _next(self) -> None:
        # A rack's first answers go in a few writes, not one: a credential
        # to mint (pxed.boot.minting) waits behind one of them at most.
        writes, self._queued = self._queued[:WRITE_AT_MOST], self._queued[WRITE_AT_MOST:]
        if not writes:
            self._writing = False
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)
            return
        self._writing = True

        def written(found: list[dict[int, int]]) -> None:
            for w, rows in zip(writes, found, strict=True):
                if isinstance(w, Served):
                    continue
                keys = {a.machine_id: a.key for a in w.answers}  # the last of each
                for machine_id, row in rows.items():
                    # Unless another answer came since (its row is not known yet).
                    if self._last.get(machine_id) == keys[machine_id]:
                        self._rows[machine_id] = row

        def failed(failure) -> None:
            # A busy or full database loses these lines, never an answer.
            log.warn("recording boot answers: {error}", error=failure.getErrorMessage())

        d = self._db.run(thd_write, writes)
        d.addCallbacks(written, failed)
        d.addBoth(lambda _: self._next())
