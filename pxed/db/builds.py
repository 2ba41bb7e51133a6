"""Image builds and their log lines."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import sqlalchemy as sa

from pxed.db import events, users
from pxed.db.errors import ConflictError, NotFoundError
from pxed.db.schema import build_logs, builds, utcnow

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
    # The server that owns it (config server_name) and its last heartbeat.
    server: str | None = None
    heartbeat_at: dt.datetime | None = None

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
        raise NotFoundError(f"no build {build_id}")
    return build


def thd_create(
    conn: sa.Connection,
    image_uuid: str,
    owner: str,
    fmt: str,
    dockerfile: str,
    has_context: bool,
    actor: str,
    server: str | None = None,
) -> Build:
    """A queued build, owned by *server* (which accepted it and prepares
    its work directory) until that server's heartbeat lapses."""
    now = utcnow()
    build_id = conn.execute(
        builds.insert().values(
            image_uuid=image_uuid,
            owner_id=users.thd_id(conn, owner),
            state=QUEUED,
            format=fmt,
            dockerfile=dockerfile,
            has_context=has_context,
            created_at=now,
            server=server,
            heartbeat_at=now,
        )
    ).inserted_primary_key[0]
    events.thd_record(conn, actor, "build.queue", "image", image_uuid, f"build={build_id}")
    return get_or_404(conn, build_id)


def thd_list_for_image(conn: sa.Connection, image_uuid: str) -> list[Build]:
    rows = conn.execute(
        sa.select(*_COLUMNS).where(builds.c.image_uuid == image_uuid).order_by(builds.c.id)
    )
    return [Build(**r._mapping) for r in rows]


def _skip_locked(conn: sa.Connection, q: sa.Select) -> sa.Select:
    """*q* locking the rows it returns, passing over rows another server's
    transaction holds (PostgreSQL); SQLite serialises writers anyway."""
    if conn.dialect.name == "postgresql":
        return q.with_for_update(skip_locked=True)
    return q


def _mine(server: str | None) -> sa.ColumnElement[bool]:
    # Builds from before servers were named (server NULL) are anyone's.
    c = builds.c.server
    return c.is_(None) if server is None else sa.or_(c == server, c.is_(None))


def thd_next_queued(conn: sa.Connection, server: str | None = None) -> Build | None:
    """Take the oldest queued build of *server*'s (FIFO) and mark it running."""
    first = conn.execute(
        _skip_locked(
            conn,
            sa.select(builds.c.id)
            .where(builds.c.state == QUEUED, _mine(server))
            .order_by(builds.c.id)
            .limit(1),
        )
    ).scalar()
    if first is None:
        return None
    now = utcnow()
    taken = conn.execute(
        builds.update()
        .where(builds.c.id == first, builds.c.state == QUEUED)
        .values(state=RUNNING, started_at=now, server=server, heartbeat_at=now)
    ).rowcount
    return get_or_404(conn, first) if taken else None


def thd_heartbeat(conn: sa.Connection, server: str, running: list[int]) -> dict[int, str]:
    """*server* is alive: renew the lease of its queued and running builds.
    Returns those of *running* (the builds it is running) that no longer
    are: cancelled from another server, or failed by one that thought this
    server gone.  Their message, by id."""
    conn.execute(
        builds.update()
        .where(builds.c.server == server, builds.c.state.in_((QUEUED, RUNNING)))
        .values(heartbeat_at=utcnow())
    )
    if not running:
        return {}
    rows = conn.execute(
        sa.select(builds.c.id, builds.c.message).where(
            builds.c.id.in_(running), builds.c.state != RUNNING
        )
    )
    return {r.id: r.message for r in rows}


@dataclass(frozen=True)
class Orphans:
    """What a lease scan did: builds taken over (queued, to run here) and
    builds failed (they were running on a server that stopped)."""

    taken: list[int]
    failed: list[int]


def thd_reclaim(conn: sa.Connection, server: str, lease: float) -> Orphans:
    """Builds of other servers whose heartbeat is older than *lease*
    seconds: queued ones become *server*'s, running ones fail with the
    reason (their container and partial output died with, or are beyond
    the reach of, the server that ran them)."""
    now = utcnow()
    stale = now - dt.timedelta(seconds=lease)
    c = builds.c
    rows = conn.execute(
        _skip_locked(
            conn,
            sa.select(c.id, c.state, c.server, c.heartbeat_at, c.image_uuid)
            .where(
                c.state.in_((QUEUED, RUNNING)),
                sa.or_(c.server.is_(None), c.server != server),
                sa.or_(c.heartbeat_at.is_(None), c.heartbeat_at < stale),
            )
            .order_by(c.id),
        )
    ).all()
    taken = [r.id for r in rows if r.state == QUEUED]
    if taken:
        conn.execute(
            builds.update()
            .where(c.id.in_(taken), c.state == QUEUED)
            .values(server=server, heartbeat_at=now)
        )
    failed = []
    for r in rows:
        if r.state != RUNNING:
            continue
        since = "never" if r.heartbeat_at is None else f"{r.heartbeat_at:%Y-%m-%dT%H:%M:%SZ}"
        message = (
            f"server {r.server or '(unnamed)'} stopped while the build was running "
            f"(last heartbeat {since}); failed by {server}"
        )
        _fail(conn, r.id, message)
        failed.append(r.id)
    return Orphans(taken, failed)


def _fail(conn: sa.Connection, build_id: int, message: str) -> None:
    thd_finish(conn, build_id, FAILED, message)
    last = conn.execute(
        sa.select(sa.func.max(build_logs.c.seq)).where(build_logs.c.build_id == build_id)
    ).scalar()
    thd_append_log(conn, build_id, (last if last is not None else -1) + 1, f"pxed: {message}")


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


def thd_cancel(conn: sa.Connection, build_id: int, actor: str) -> tuple[Build, str]:
    """Cancel a queued or running build; it and the state it was in."""
    locked = conn.execute(
        sa.select(builds.c.state).where(builds.c.id == build_id).with_for_update()
    ).scalar()
    build = get_or_404(conn, build_id)
    if build.finished:
        raise ConflictError(f"build {build_id} has already {build.state}")
    conn.execute(
        builds.update()
        .where(builds.c.id == build_id, builds.c.state.in_((QUEUED, RUNNING)))
        .values(state=CANCELLED, message=f"cancelled by {actor}", finished_at=utcnow())
    )
    events.thd_record(conn, actor, "build.cancel", "image", build.image_uuid, f"build={build_id}")
    return get_or_404(conn, build_id), locked or build.state


def thd_fail_unfinished(conn: sa.Connection, server: str | None, message: str) -> list[int]:
    """At start: *server*'s running builds (and those of no server), which
    died with its last run, fail; its queued ones stay queued."""
    ids = [
        r.id
        for r in conn.execute(
            sa.select(builds.c.id).where(builds.c.state == RUNNING, _mine(server))
        )
    ]
    for build_id in ids:
        _fail(conn, build_id, message)
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
