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


def thd_record(
    conn: sa.Connection, actor: str, action: str, target_type: str, target: str, detail: str = ""
) -> None:
    conn.execute(
        events.insert().values(
            at=utcnow(),
            actor=actor,
            action=action,
            target_type=target_type,
            target=target,
            detail=detail,
        )
    )


def thd_list(
    conn: sa.Connection,
    target_type: str | None = None,
    target: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[Event]:
    q = sa.select(events).order_by(events.c.id.desc()).limit(limit)
    if target_type is not None:
        q = q.where(events.c.target_type == target_type)
    if target is not None:
        q = q.where(events.c.target == target)
    if before is not None:
        q = q.where(events.c.id < before)
    return [Event(**row._mapping) for row in conn.execute(q)]
