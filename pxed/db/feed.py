"""What the live stream (``GET /events/stream``) tails: audit events,
management OS log lines, deploy progress and build log lines newer than a
cursor, each with what decides who may see it (the machine's MAC, the
owner of an image or setup)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa

from pxed.db import builds, progress
from pxed.db.events import Event
from pxed.db.progress import Progress
from pxed.db.queue import LogLine
from pxed.db.schema import (
    boot_setups,
    events,
    image_setups,
    images,
    machine_logs,
    machine_macs,
    machines,
    utcnow,
    work_progress,
)

# Rows of each kind read in one go; a busier table is read again at once.
BATCH = 500


# machine id -> its first MAC and the progress of its current work (None:
# it has none now).
Moved = dict[int, tuple[str | None, Progress | None]]


@dataclass(frozen=True)
class Cursor:
    event: int
    log: int
    progress_at: dt.datetime


@dataclass(frozen=True)
class FeedEvent:
    event: Event
    # The machine's first MAC, for events about a machine.
    mac: str | None
    # Who owns the image or setup the event is about (None: nobody, or gone).
    owner_id: int | None


@dataclass(frozen=True)
class FeedLog:
    line: LogLine
    machine_id: int
    mac: str | None


@dataclass(frozen=True)
class Batch:
    cursor: Cursor
    events: list[FeedEvent] = field(default_factory=list)
    logs: list[FeedLog] = field(default_factory=list)
    # The machines whose work moved.
    progress: Moved = field(default_factory=dict)
    # build id -> its log lines after the cursor given for it, (seq, line)
    build_lines: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    # More rows wait than one batch holds.
    more: bool = False


def thd_head(conn: sa.Connection) -> Cursor:
    """Where the tables are now: a stream starts from here."""
    return Cursor(
        event=conn.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0,
        log=conn.execute(sa.select(sa.func.max(machine_logs.c.id))).scalar() or 0,
        progress_at=conn.execute(sa.select(sa.func.max(work_progress.c.updated_at))).scalar()
        or utcnow(),
    )


def _first_mac(same_machine: sa.ColumnElement[bool]) -> sa.ScalarSelect:
    return (
        sa.select(machine_macs.c.mac)
        .where(same_machine)
        .order_by(machine_macs.c.position)
        .limit(1)
        .scalar_subquery()
    )


def thd_since(conn: sa.Connection, cursor: Cursor, build_after: dict[int, int]) -> Batch:
    """Everything after *cursor*, and the log lines of the builds in
    *build_after* after the sequence number given for each."""
    e = events.c
    # Compared as text: a target is not always a number (no cast can fail).
    same_machine = sa.cast(machine_macs.c.machine_id, sa.String) == e.target
    rows = conn.execute(
        sa.select(
            events,
            sa.case((e.target_type == "machine", _first_mac(same_machine)), else_=sa.null()).label(
                "mac"
            ),
            sa.case(
                (
                    e.target_type == "image",
                    sa.select(images.c.owner_id).where(images.c.uuid == e.target).scalar_subquery(),
                ),
                (
                    e.target_type == "setup",
                    sa.select(image_setups.c.owner_id)
                    .where(image_setups.c.uuid == e.target)
                    .scalar_subquery(),
                ),
                else_=sa.null(),
            ).label("owner_id"),
        )
        .where(e.id > cursor.event)
        .order_by(e.id)
        .limit(BATCH)
    ).all()
    found = [
        FeedEvent(
            Event(**{c.name: row._mapping[c.name] for c in events.c}),
            row.mac,
            row.owner_id,
        )
        for row in rows
    ]
    logs = conn.execute(
        sa.select(
            machine_logs,
            _first_mac(machine_macs.c.machine_id == machine_logs.c.machine_id).label("mac"),
        )
        .where(machine_logs.c.id > cursor.log)
        .order_by(machine_logs.c.id)
        .limit(BATCH)
    ).all()
    lines = [
        FeedLog(
            LogLine(r.id, r.at, r.level, r.origin, r.message),
            r.machine_id,
            r.mac,
        )
        for r in logs
    ]
    # Machines whose work moved: progress reported, or an event about them
    # (queued, netbooted, started, done).
    moved = conn.execute(
        sa.select(boot_setups.c.machine_id, sa.func.max(work_progress.c.updated_at))
        .select_from(work_progress.join(boot_setups, boot_setups.c.id == work_progress.c.work_id))
        .where(work_progress.c.updated_at > cursor.progress_at)
        .group_by(boot_setups.c.machine_id)
    ).all()
    progress_at = max([cursor.progress_at, *(r[1] for r in moved)])
    moved_ids = {r[0] for r in moved} | {
        int(f.event.target)
        for f in found
        if f.event.target_type == "machine" and f.event.target.isdigit()
    }
    current, macs = {}, {}
    if moved_ids:
        current = progress.thd_for_machines(conn, moved_ids)
        first = _first_mac(machine_macs.c.machine_id == machines.c.id)
        query = sa.select(machines.c.id, first).where(machines.c.id.in_(moved_ids))
        macs = dict(conn.execute(query).all())
    build_lines: dict[int, list[tuple[int, str]]] = {}
    for build_id, after in build_after.items():
        if new := builds.thd_log(conn, build_id, after):
            build_lines[build_id] = new
    return Batch(
        cursor=Cursor(
            event=found[-1].event.id if found else cursor.event,
            log=lines[-1].line.id if lines else cursor.log,
            progress_at=progress_at,
        ),
        events=found,
        logs=lines,
        progress={m: (macs.get(m), current.get(m)) for m in moved_ids},
        build_lines=build_lines,
        more=len(found) == BATCH or len(lines) == BATCH,
    )
