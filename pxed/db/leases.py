"""Leases: who has which machine from when until when.

A lease runs over [starts, ends).  Two leases of one machine never overlap:
a reservation locks the rows of the machines it names (PostgreSQL's FOR
UPDATE; SQLite's writes are one at a time) before it looks, so of two
users asking for the same hours at once exactly one gets them, whichever
server each asked.  A reservation of several machines is all or nothing.
Staff bypass nothing here but the per-role limits (``Limits``); who may act
on a leased machine is pxed.web's (``holder_at``)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from pxed.db import events, queue
from pxed.db.errors import ConflictError, InvalidError, NotFoundError, NotPermittedError
from pxed.db.schema import boot_setups, leases, machine_macs, machines, users, utcnow


@dataclass(frozen=True)
class Limits:
    """What one user of a role may hold: machines under lease at any one
    time, hours per lease, and how far ahead a lease may start.  None: no
    limit (admins)."""

    machines: int | None
    hours: float | None
    ahead_days: float | None


@dataclass(frozen=True)
class Lease:
    id: int
    machine: str
    holder: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    created_at: dt.datetime
    ended_at: dt.datetime | None
    warned_at: dt.datetime | None
    reservation: str

    def state(self, now: dt.datetime) -> str:
        if self.ended_at is not None:
            return "ended"
        if now < self.starts_at:
            return "upcoming"
        return "active" if now < self.ends_at else "ending"


_SELECT = (
    sa.select(
        leases.c.id,
        machines.c.name.label("machine"),
        users.c.username.label("holder"),
        leases.c.starts_at,
        leases.c.ends_at,
        leases.c.created_at,
        leases.c.ended_at,
        leases.c.warned_at,
        leases.c.reservation,
    )
    .join(machines, machines.c.id == leases.c.machine_id)
    .join(users, users.c.id == leases.c.holder_id)
)


def thd_machine_id(conn: sa.Connection, name: str, mac: str | None = None) -> int:
    """The machine named *name*, else the one with MAC *mac* (the same
    text, normalised, where it reads as one); NotFoundError."""
    found = conn.execute(sa.select(machines.c.id).where(machines.c.name == name)).scalar()
    if found is None and mac is not None:
        found = conn.execute(
            sa.select(machine_macs.c.machine_id).where(machine_macs.c.mac == mac)
        ).scalar()
    if found is None:
        raise NotFoundError(f"no machine named {name!r} or with that MAC")
    return found


def _live():
    """Leases still holding their machine (not ended or released)."""
    return leases.c.ended_at.is_(None)


def _in_window(starts: dt.datetime, ends: dt.datetime, but: int | None = None) -> list:
    """Live leases overlapping [starts, ends), lease *but* left out."""
    where = [_live(), leases.c.starts_at < ends, leases.c.ends_at > starts]
    if but is not None:
        where.append(leases.c.id != but)
    return where


def _overlapping(machine_id: int, starts: dt.datetime, ends: dt.datetime, but: int | None = None):
    where = _in_window(starts, ends, but)
    return _SELECT.where(leases.c.machine_id == machine_id, *where).order_by(leases.c.starts_at)


def _lock(conn: sa.Connection, machine_ids: Sequence[int]) -> None:
    # In id order: two reservations of the same machines never deadlock.
    conn.execute(
        sa.select(machines.c.id)
        .where(machines.c.id.in_(sorted(machine_ids)))
        .order_by(machines.c.id)
        .with_for_update()
    )


def _check_window(starts: dt.datetime, ends: dt.datetime, limits: Limits, now: dt.datetime) -> None:
    if ends <= starts:
        raise InvalidError("End: must be after Start")
    if ends <= now:
        raise InvalidError("End: already past")
    if limits.hours is not None and ends - starts > dt.timedelta(hours=limits.hours):
        raise NotPermittedError(f"a lease may last at most {limits.hours:g} hours for your role")
    if limits.ahead_days is not None and starts - now > dt.timedelta(days=limits.ahead_days):
        raise NotPermittedError(
            f"a lease may start at most {limits.ahead_days:g} days ahead for your role"
        )


def _check_count(
    conn: sa.Connection,
    holder_id: int,
    starts: dt.datetime,
    ends: dt.datetime,
    adding: int,
    limits: Limits,
    but: int | None = None,
) -> None:
    """The holder's other leases overlapping the window, with *adding*
    more, stay within the role's machine limit (counted over the whole
    window: a conservative bound, never more than the limit at once)."""
    if limits.machines is None:
        return
    held = conn.execute(
        sa.select(sa.func.count(sa.distinct(leases.c.machine_id))).where(
            leases.c.holder_id == holder_id, *_in_window(starts, ends, but)
        )
    ).scalar_one()
    if held + adding > limits.machines:
        raise NotPermittedError(
            f"your role may hold at most {limits.machines} machine(s) at once; "
            f"you would hold {held + adding} in that window"
        )


def _describe(found: Lease) -> str:
    return (
        f"machine {found.machine!r} is leased to {found.holder} from "
        f"{found.starts_at.isoformat()} until {found.ends_at.isoformat()}"
    )


def thd_reserve(
    conn: sa.Connection,
    machine_ids: Sequence[int],
    holder_id: int,
    starts: dt.datetime,
    ends: dt.datetime,
    limits: Limits,
    actor: str,
    now: dt.datetime | None = None,
) -> list[Lease]:
    """One lease per machine, all or none; ConflictError naming the first
    lease in the way."""
    now = now or utcnow()
    if not machine_ids:
        raise InvalidError("Machines: name at least one")
    if len(set(machine_ids)) != len(machine_ids):
        raise InvalidError("Machines: a machine is named twice")
    starts = max(starts, now)
    _check_window(starts, ends, limits, now)
    _lock(conn, machine_ids)
    for machine_id in machine_ids:
        clash = conn.execute(_overlapping(machine_id, starts, ends).limit(1)).first()
        if clash is not None:
            raise ConflictError(_describe(Lease(**clash._mapping)))
    _check_count(conn, holder_id, starts, ends, len(machine_ids), limits)
    reservation = str(uuid.uuid4())
    ids = []
    for machine_id in machine_ids:
        lease_id = conn.execute(
            leases.insert().values(
                machine_id=machine_id,
                holder_id=holder_id,
                starts_at=starts,
                ends_at=ends,
                created_at=now,
                reservation=reservation,
            )
        ).inserted_primary_key[0]
        ids.append(lease_id)
        events.thd_record(
            conn, actor, "lease.reserve", "machine", str(machine_id),
            f"lease={lease_id} {starts.isoformat()}..{ends.isoformat()}",
        )  # fmt: skip
    return [thd_get(conn, i) for i in ids]


def thd_reserve_any(
    conn: sa.Connection,
    candidates: Sequence[int],
    count: int,
    holder_id: int,
    starts: dt.datetime,
    ends: dt.datetime,
    limits: Limits,
    actor: str,
    now: dt.datetime | None = None,
) -> list[Lease]:
    """*count* of the *candidates* (machine ids, in the order to try) that
    are free over the window, leased as one reservation; ConflictError if
    fewer are."""
    if count < 1:
        raise InvalidError("Count: at least 1")
    if not candidates:
        raise ConflictError("no machine matches the filter")
    now = now or utcnow()
    starts = max(starts, now)
    _check_window(starts, ends, limits, now)
    _lock(conn, candidates)
    free = [
        m
        for m in candidates
        if conn.execute(_overlapping(m, starts, ends).limit(1)).first() is None
    ]
    if len(free) < count:
        raise ConflictError(
            f"{len(free)} of the {len(candidates)} machine(s) matching the filter are free "
            f"then; {count} asked for"
        )
    return thd_reserve(conn, free[:count], holder_id, starts, ends, limits, actor, now)


def thd_get(conn: sa.Connection, lease_id: int) -> Lease:
    row = conn.execute(_SELECT.where(leases.c.id == lease_id)).first()
    if row is None:
        raise NotFoundError(f"no lease {lease_id}")
    return Lease(**row._mapping)


def _ids(conn: sa.Connection, lease_id: int) -> tuple[int, int]:
    row = conn.execute(
        sa.select(leases.c.machine_id, leases.c.holder_id).where(leases.c.id == lease_id)
    ).first()
    if row is None:
        raise NotFoundError(f"no lease {lease_id}")
    return row.machine_id, row.holder_id


def thd_extend(
    conn: sa.Connection,
    lease_id: int,
    ends: dt.datetime,
    limits: Limits,
    actor: str,
    now: dt.datetime | None = None,
) -> Lease:
    """The lease ends at *ends* instead (later or earlier), if nothing of
    the machine's follows in the way and the role allows its length."""
    now = now or utcnow()
    machine_id, holder_id = _ids(conn, lease_id)
    _lock(conn, [machine_id])
    lease = thd_get(conn, lease_id)
    if lease.ended_at is not None:
        raise ConflictError(f"lease {lease_id} has ended")
    _check_window(lease.starts_at, ends, limits, now)
    clash = conn.execute(_overlapping(machine_id, lease.starts_at, ends, lease_id).limit(1)).first()
    if clash is not None:
        raise ConflictError(f"it cannot run on: {_describe(Lease(**clash._mapping))}")
    _check_count(conn, holder_id, lease.starts_at, ends, 1, limits, but=lease_id)
    conn.execute(
        leases.update().where(leases.c.id == lease_id).values(ends_at=ends, warned_at=None)
    )
    events.thd_record(
        conn, actor, "lease.extend", "machine", str(machine_id),
        f"lease={lease_id} until {ends.isoformat()}",
    )  # fmt: skip
    return thd_get(conn, lease_id)


def thd_release(
    conn: sa.Connection, lease_id: int, actor: str, now: dt.datetime | None = None
) -> Lease:
    """Ended now (a lease not begun yet is cancelled: it ends before it
    starts)."""
    now = now or utcnow()
    machine_id, _ = _ids(conn, lease_id)
    _lock(conn, [machine_id])
    lease = thd_get(conn, lease_id)
    if lease.ended_at is not None:
        raise ConflictError(f"lease {lease_id} has ended")
    values: dict = {"ended_at": now}
    if now < lease.ends_at:
        values["ends_at"] = max(now, lease.starts_at)
    conn.execute(leases.update().where(leases.c.id == lease_id).values(**values))
    events.thd_record(conn, actor, "lease.release", "machine", str(machine_id), f"lease={lease_id}")
    return thd_get(conn, lease_id)


def thd_list(
    conn: sa.Connection,
    machine_id: int | None = None,
    holder_id: int | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 1000,
) -> list[Lease]:
    """Leases overlapping [since, until), by start."""
    q = _SELECT
    if machine_id is not None:
        q = q.where(leases.c.machine_id == machine_id)
    if holder_id is not None:
        q = q.where(leases.c.holder_id == holder_id)
    if since is not None:
        q = q.where(leases.c.ends_at > since)
    if until is not None:
        q = q.where(leases.c.starts_at < until)
    rows = conn.execute(q.order_by(leases.c.starts_at, leases.c.id).limit(limit))
    return [Lease(**r._mapping) for r in rows]


def thd_holding(
    conn: sa.Connection, machine_id: int, now: dt.datetime | None = None
) -> Lease | None:
    """The lease that has the machine now, if any."""
    now = now or utcnow()
    row = conn.execute(
        _SELECT.where(
            leases.c.machine_id == machine_id,
            _live(),
            leases.c.starts_at <= now,
            leases.c.ends_at > now,
        ).limit(1)
    ).first()
    return Lease(**row._mapping) if row is not None else None


# ---------------------------------------------------------------------------
# The keeper's side (pxed/leasekeeper.py): each transition happens once,
# whichever server looks first: the row is changed only where it still
# is as it was seen.


@dataclass(frozen=True)
class Due:
    """What the keeper has to do now: leases to warn, to end, and running
    ones (whose machines other users' queued work is cancelled from)."""

    warn: list[tuple[int, int]]
    end: list[tuple[int, int]]
    running: list[tuple[int, int]]


def thd_due(conn: sa.Connection, now: dt.datetime, warn_before: dt.timedelta) -> Due:
    """(lease id, machine id) of each."""
    live = sa.select(leases.c.id, leases.c.machine_id).where(_live())
    pairs = lambda q: [(r.id, r.machine_id) for r in conn.execute(q)]  # noqa: E731
    return Due(
        warn=pairs(
            live.where(
                leases.c.warned_at.is_(None),
                leases.c.ends_at > now,
                leases.c.ends_at <= now + warn_before,
            )
        ),
        end=pairs(live.where(leases.c.ends_at <= now)),
        running=pairs(live.where(leases.c.starts_at <= now, leases.c.ends_at > now)),
    )


def thd_warn(conn: sa.Connection, lease_id: int, now: dt.datetime, actor: str) -> Lease | None:
    """Mark the lease warned and record lease.ending; None if another
    server did, or it ended meanwhile."""
    changed = conn.execute(
        leases.update()
        .where(leases.c.id == lease_id, leases.c.warned_at.is_(None), _live())
        .values(warned_at=now)
    ).rowcount
    if not changed:
        return None
    lease = thd_get(conn, lease_id)
    machine_id, _ = _ids(conn, lease_id)
    events.thd_record(
        conn, actor, "lease.ending", "machine", str(machine_id),
        f"lease={lease_id} of {lease.holder} ends at {lease.ends_at.isoformat()}",
    )  # fmt: skip
    return lease


def thd_end(conn: sa.Connection, lease_id: int, now: dt.datetime, actor: str) -> Lease | None:
    """End a lease whose time is up and cancel its holder's work still
    queued on the machine; None if another server did."""
    changed = conn.execute(
        leases.update()
        .where(leases.c.id == lease_id, _live(), leases.c.ends_at <= now)
        .values(ended_at=now)
    ).rowcount
    if not changed:
        return None
    lease = thd_get(conn, lease_id)
    machine_id, holder_id = _ids(conn, lease_id)
    events.thd_record(
        conn, actor, "lease.end", "machine", str(machine_id), f"lease={lease_id} of {lease.holder}"
    )
    _cancel_queued(conn, machine_id, boot_setups.c.owner_id == holder_id, actor)
    return lease


def thd_hold_off(conn: sa.Connection, lease_id: int, actor: str) -> int:
    """Cancel work queued on a leased machine by anyone but its holder and
    staff; how many."""
    machine_id, holder_id = _ids(conn, lease_id)
    staff = sa.select(users.c.id).where(users.c.role.in_(("moderator", "admin")))
    others = sa.and_(boot_setups.c.owner_id != holder_id, boot_setups.c.owner_id.not_in(staff))
    return _cancel_queued(conn, machine_id, others, actor)


def _cancel_queued(conn: sa.Connection, machine_id: int, whose, actor: str) -> int:
    queued = conn.execute(
        sa.select(boot_setups.c.id).where(
            boot_setups.c.machine_id == machine_id, boot_setups.c.state == queue.QUEUED, whose
        )
    ).scalars()
    count = 0
    for work_id in list(queued):
        try:
            queue.thd_cancel(conn, machine_id, work_id, actor)
        except ConflictError:
            continue  # taken meanwhile: it runs
        count += 1
    return count
