"""Image builds and their log lines."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import sqlalchemy as sa

from pxed.db import events, users
from pxed.db.schema import build_logs, builds, utcnow
from pxed.errors import Conflict, NotFound

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
FORMATS = ("disk", "tar", "initramfs")


@dataclass(frozen=True)
class Build:
    id: int
    image_uuid: str
    owner: str
    state: str
    format: str
    dockerfile: str
    has_context: bool
    message: str
    version: int | None
    timings: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


# A build's columns, its owner by name (stored by id).
_COLUMNS = (
    *(c for c in builds.c if c.name != "owner_id"),
    users.owner_name(builds.c.owner_id).label("owner"),
)


def thd_get(conn: sa.Connection, build_id: int) -> Build | None:
    row = conn.execute(sa.select(*_COLUMNS).where(builds.c.id == build_id)).first()
    return None if row is None else Build(**row._mapping)


def get_or_404(conn: sa.Connection, build_id: int) -> Build:
    build = thd_get(conn, build_id)
    if build is None:
        raise NotFound(f"no build {build_id}")
    return build


def thd_create(
    conn: sa.Connection,
    image_uuid: str,
    owner: str,
    fmt: str,
    dockerfile: str,
    has_context: bool,
    actor: str,
) -> Build:
    build_id = conn.execute(
        builds.insert().values(
            image_uuid=image_uuid,
            owner_id=users.thd_id(conn, owner),
            state=QUEUED,
            format=fmt,
            dockerfile=dockerfile,
            has_context=has_context,
            created_at=utcnow(),
        )
    ).inserted_primary_key[0]
    events.thd_record(conn, actor, "build.queue", "image", image_uuid, f"build={build_id}")
    return get_or_404(conn, build_id)


def thd_list_for_image(conn: sa.Connection, image_uuid: str) -> list[Build]:
    rows = conn.execute(
        sa.select(*_COLUMNS).where(builds.c.image_uuid == image_uuid).order_by(builds.c.id)
    )
    return [Build(**r._mapping) for r in rows]


def thd_next_queued(conn: sa.Connection) -> Build | None:
    """Take the oldest queued build (FIFO) and mark it running."""
    first = conn.execute(
        sa.select(sa.func.min(builds.c.id)).where(builds.c.state == QUEUED)
    ).scalar()
    if first is None:
        return None
    taken = conn.execute(
        builds.update()
        .where(builds.c.id == first, builds.c.state == QUEUED)
        .values(state=RUNNING, started_at=utcnow())
    ).rowcount
    return get_or_404(conn, first) if taken else None


def thd_finish(
    conn: sa.Connection,
    build_id: int,
    state: str,
    message: str,
    version: int | None = None,
    timings: dict | None = None,
) -> Build:
    """End a build unless it already ended (a cancel got there first)."""
    conn.execute(
        builds.update()
        .where(builds.c.id == build_id, builds.c.state.in_((QUEUED, RUNNING)))
        .values(
            state=state,
            message=message,
            version=version,
            timings=json.dumps(timings or {}),
            finished_at=utcnow(),
        )
    )
    build = get_or_404(conn, build_id)
    events.thd_record(
        conn,
        "system",
        f"build.{build.state}",
        "image",
        build.image_uuid,
        f"build={build_id} {build.message}".strip(),
    )
    return build


def thd_cancel(conn: sa.Connection, build_id: int, actor: str) -> Build:
    build = get_or_404(conn, build_id)
    if build.finished:
        raise Conflict(f"build {build_id} has already {build.state}")
    conn.execute(
        builds.update()
        .where(builds.c.id == build_id, builds.c.state.in_((QUEUED, RUNNING)))
        .values(state=CANCELLED, message=f"cancelled by {actor}", finished_at=utcnow())
    )
    events.thd_record(conn, actor, "build.cancel", "image", build.image_uuid, f"build={build_id}")
    return get_or_404(conn, build_id)


def thd_fail_unfinished(conn: sa.Connection, message: str) -> list[int]:
    """At start: builds a stopped daemon left queued or running fail."""
    ids = [
        r.id
        for r in conn.execute(sa.select(builds.c.id).where(builds.c.state.in_((QUEUED, RUNNING))))
    ]
    if ids:
        conn.execute(
            builds.update()
            .where(builds.c.id.in_(ids))
            .values(state=FAILED, message=message, finished_at=utcnow())
        )
    return ids


def thd_append_log(conn: sa.Connection, build_id: int, seq: int, line: str) -> None:
    conn.execute(build_logs.insert().values(build_id=build_id, seq=seq, at=utcnow(), line=line))


def thd_log(conn: sa.Connection, build_id: int, after: int = -1) -> list[tuple[int, str]]:
    rows = conn.execute(
        sa.select(build_logs.c.seq, build_logs.c.line)
        .where(build_logs.c.build_id == build_id, build_logs.c.seq > after)
        .order_by(build_logs.c.seq)
    )
    return [(r.seq, r.line) for r in rows]
