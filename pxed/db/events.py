"""The append-only audit log."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from pxed.db.schema import events, utcnow


@dataclass(frozen=True)
class Event:
    id: int
    at: dt.datetime
    actor: str
    action: str
    target_type: str
    target: str
    detail: str
    # Repeats counted in this row, and when the last one was.
    count: int = 1
    last_at: dt.datetime | None = None


def new_row(
    actor: str, action: str, target_type: str, target: str, detail: str = "", count: int = 1
) -> dict:
    """The columns of a new event (all but its id)."""
    now = utcnow()
    return {
        "at": now,
        "count": count,
        # A row standing for several has its last one now.
        "last_at": now if count > 1 else None,
        "actor": actor,
        "action": action,
        "target_type": target_type,
        "target": target,
        "detail": detail,
    }


def thd_record(
    conn: sa.Connection,
    actor: str,
    action: str,
    target_type: str,
    target: str,
    detail: str = "",
    count: int = 1,
) -> int:
    """Add an event; its id."""
    row = new_row(actor, action, target_type, target, detail, count)
    return conn.execute(events.insert().values(row)).inserted_primary_key[0]


def thd_insert_many(conn: sa.Connection, rows: list[dict]) -> list[int]:
    """Add events, each of *rows* a ``new_row``; their ids, in
    order.  One statement for them all (a rack's first boot answers)."""
    if not rows:
        return []
    return list(
        conn.execute(
            events.insert().returning(events.c.id, sort_by_parameter_order=True), rows
        ).scalars()
    )


def thd_last_of(
    conn: sa.Connection, action: str, target_type: str, targets: list[str]
) -> list[tuple[int, str, str]]:
    """(id, target, detail) of the last *action* event about each of
    *targets* that has one, in one statement."""
    if not targets:
        return []
    last = (
        sa.select(sa.func.max(events.c.id))
        .where(
            events.c.target_type == target_type,
            events.c.target.in_(targets),
            events.c.action == action,
        )
        .group_by(events.c.target)
    )
    q = sa.select(events.c.id, events.c.target, events.c.detail).where(events.c.id.in_(last))
    return [tuple(r) for r in conn.execute(q)]


def thd_details_of(
    conn: sa.Connection, action: str, target_type: str, wanted: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Those of *wanted* (target, detail) that have an *action* event."""
    if not wanted:
        return set()
    q = sa.select(events.c.target, events.c.detail).where(
        events.c.target_type == target_type,
        events.c.target.in_(sorted({t for t, _ in wanted})),
        events.c.action == action,
        events.c.detail.in_(sorted({d for _, d in wanted})),
    )
    return {tuple(r) for r in conn.execute(q)} & wanted


def says(detail: str, key: str) -> bool:
    """Whether an event of *detail* says *key* (a repeat of it adds to it)."""
    return detail == key or detail.startswith(key + "; ")


def thd_record_change(
    conn: sa.Connection,
    actor: str,
    action: str,
    target_type: str,
    target: str,
    key: str,
    more: str = "",
    times: int = 1,
) -> int:
    """Record an event that repeats (a boot answer given again): if the
    last *action* event about the target says the same *key*, that row
    counts one more (its detail and last time become this one's);
    otherwise a new row.  The log grows with changes, not with requests.
    *times*: how many such events this one call stands for.  The id of
    the row that has it."""
    detail = f"{key}; {more}" if more else key
    last = conn.execute(
        sa.select(events.c.id, events.c.detail)
        .where(
            events.c.target_type == target_type,
            events.c.target == target,
            events.c.action == action,
        )
        .order_by(events.c.id.desc())
        .limit(1)
    ).first()
    if last is not None and says(last.detail, key):
        conn.execute(
            events.update()
            .where(events.c.id == last.id)
            .values(count=events.c.count + times, last_at=utcnow(), actor=actor, detail=detail)
        )
        return last.id
    return thd_record(conn, actor, action, target_type, target, detail, times)


def thd_add_repeats(conn: sa.Connection, repeats: list[dict]) -> None:
    """Add repeats to events known by id: each of *repeats* has ``row``
    (the event's id), ``times``, ``actor`` and ``detail``.  One statement
    for them all: the boot answers' counts of a whole rack at once."""
    if not repeats:
        return
    conn.execute(
        events.update()
        .where(events.c.id == sa.bindparam("row"))
        .values(
            count=events.c.count + sa.bindparam("times"),
            last_at=utcnow(),
            actor=sa.bindparam("actor"),
            detail=sa.bindparam("detail"),
        ),
        repeats,
    )


def thd_list(
    conn: sa.Connection,
    target_type: str | None = None,
    target: str | None = None,
    limit: int | None = 100,
    before: int | None = None,
    since: dt.datetime | None = None,
) -> list[Event]:
    """Newest first: at most *limit*, older than event *before*, and (with
    *since*) those that happened, or last repeated, since then."""
    q = sa.select(events).order_by(events.c.id.desc())
    if limit is not None:
        q = q.limit(limit)
    if since is not None:
        q = q.where(sa.func.coalesce(events.c.last_at, events.c.at) >= since)
    if target_type is not None:
        q = q.where(events.c.target_type == target_type)
    if target is not None:
        q = q.where(events.c.target == target)
    if before is not None:
        q = q.where(events.c.id < before)
    return [Event(**row._mapping) for row in conn.execute(q)]
