"""A user's credentials: API tokens and browser sessions, kept as hashes."""

from __future__ import annotations

import datetime as dt
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from twisted.logger import Logger
from twisted.python.failure import Failure

from pxed import secret
from pxed.db import events
from pxed.db.errors import NotFoundError
from pxed.db.schema import api_tokens, sessions, users, utcnow
from pxed.db.users import User, thd_get

if TYPE_CHECKING:
    from pxed.db.pool import DBPool

log = Logger()


@dataclass(frozen=True)
class Token:
    id: int
    username: str
    name: str
    prefix: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None


# -- API tokens ---------------------------------------------------------------


def thd_create_token(
    conn: sa.Connection,
    username: str,
    name: str,
    actor: str,
    expires_at: dt.datetime | None = None,
    made_with: str | None = None,
) -> tuple[Token, str]:
    """A new token; the secret is returned here and never again.  A token
    made with another (*made_with*, the caller's secret) ends no later than
    that one does: a short-lived token cannot mint a lasting one."""
    if thd_get(conn, username) is None:
        raise NotFoundError(f"no user {username!r}")
    if made_with is not None:
        parent_ends = conn.execute(
            sa.select(api_tokens.c.expires_at).where(
                api_tokens.c.token_hash == secret.digest(made_with)
            )
        ).scalar_one_or_none()
        if parent_ends is not None and (expires_at is None or parent_ends < expires_at):
            expires_at = parent_ends
    token = secret.new(secret.USER_TOKEN)
    token_id = conn.execute(
        api_tokens.insert().values(
            username=username,
            name=name,
            token_hash=secret.digest(token),
            prefix=token[:8],
            created_at=utcnow(),
            expires_at=expires_at,
        )
    ).inserted_primary_key[0]
    events.thd_record(conn, actor, "token.create", "user", username, f"id={token_id} name={name}")
    return _token(conn, token_id), token


def _token(conn: sa.Connection, token_id: int) -> Token:
    row = conn.execute(
        sa.select(*(api_tokens.c[f] for f in Token.__dataclass_fields__)).where(
            api_tokens.c.id == token_id
        )
    ).one()
    return Token(**row._mapping)


def thd_list_tokens(conn: sa.Connection, username: str) -> list[Token]:
    rows = conn.execute(
        sa.select(*(api_tokens.c[f] for f in Token.__dataclass_fields__))
        .where(api_tokens.c.username == username)
        .order_by(api_tokens.c.id)
    )
    return [Token(**r._mapping) for r in rows]


def thd_delete_token(conn: sa.Connection, username: str, token_id: int, actor: str) -> None:
    deleted = conn.execute(
        api_tokens.delete().where(api_tokens.c.id == token_id, api_tokens.c.username == username)
    ).rowcount
    if not deleted:
        raise NotFoundError(f"no token {token_id} for user {username!r}")
    events.thd_record(conn, actor, "token.delete", "user", username, f"id={token_id}")


@dataclass(frozen=True)
class TokenUse:
    """Whom a token authenticates, and when it was last recorded in use."""

    user: User
    token_id: int
    last_used_at: dt.datetime | None


# last_used_at is recorded at most this often per token: reading a
# credential needs no write.
TOUCH_INTERVAL = dt.timedelta(minutes=1)


def thd_token_use(conn: sa.Connection, token: str) -> TokenUse | None:
    """The live token's user (read-only: runs on the read path)."""
    hashed = secret.digest(token)
    row = conn.execute(
        sa.select(
            api_tokens.c.id.label("token_id"),
            api_tokens.c.token_hash,
            api_tokens.c.expires_at,
            api_tokens.c.last_used_at,
            users,
        )
        .join(users, users.c.username == api_tokens.c.username)
        .where(api_tokens.c.token_hash == hashed)
    ).first()
    if row is None or not secret.same(row.token_hash, hashed):
        return None
    if row.expires_at is not None and row.expires_at <= utcnow():
        return None
    user = User(**{f: getattr(row, f) for f in User.__dataclass_fields__})
    return TokenUse(user, row.token_id, row.last_used_at)


def thd_user_for_token(conn: sa.Connection, token: str) -> User | None:
    found = thd_token_use(conn, token)
    return None if found is None else found.user


def thd_touch_token(conn: sa.Connection, token_id: int) -> None:
    """Record the token in use now, unless that was done within
    TOUCH_INTERVAL (by another request, say)."""
    now = utcnow()
    conn.execute(
        api_tokens.update()
        .where(
            api_tokens.c.id == token_id,
            sa.or_(
                api_tokens.c.last_used_at.is_(None),
                api_tokens.c.last_used_at <= now - TOUCH_INTERVAL,
            ),
        )
        .values(last_used_at=now)
    )


class _Touches:
    """Per pool: when each token's last_used_at was last tried (so that a
    burst of requests sends one write), and whether a failure was logged."""

    def __init__(self) -> None:
        self.tried: dict[int, float] = {}
        self.failing = False


_touches: weakref.WeakKeyDictionary[DBPool, _Touches] = weakref.WeakKeyDictionary()


async def user_for_token(db: DBPool, token: str) -> User | None:
    """The token's user, read on the read path without waiting for any
    write; its last_used_at is then recorded at most once a TOUCH_INTERVAL,
    best effort, in a write of its own that the caller does not wait for
    and whose failure (a full disk, a busy database) fails nothing."""
    found = await db.read(thd_token_use, token)
    if found is None:
        return None
    if found.last_used_at is None or found.last_used_at <= utcnow() - TOUCH_INTERVAL:
        _touch(db, found.token_id)
    return found.user


def _touch(db: DBPool, token_id: int) -> None:
    state = _touches.setdefault(db, _Touches())
    now = time.monotonic()
    interval = TOUCH_INTERVAL.total_seconds()
    if now - state.tried.get(token_id, -interval) < interval:
        return
    if len(state.tried) > 10_000:  # forget tokens not seen for a while
        state.tried = {k: t for k, t in state.tried.items() if now - t < interval}
    state.tried[token_id] = now

    def done(_: object) -> None:
        state.failing = False

    def failed(failure: Failure) -> None:
        # Said once while it keeps failing, then only at debug level.
        emit = log.debug if state.failing else log.warn
        state.failing = True
        emit(
            "could not record API token {id} as used (the request went ahead): {error}",
            id=token_id,
            error=failure.getErrorMessage().splitlines()[0] if failure.getErrorMessage() else "",
        )

    db.run(thd_touch_token, token_id).addCallbacks(done, failed)


# -- sessions -----------------------------------------------------------------


def thd_create_session(conn: sa.Connection, username: str, lifetime: dt.timedelta) -> str:
    session_id = secret.new()
    now = utcnow()
    # Expired sessions are dropped here rather than by a timer.
    conn.execute(sessions.delete().where(sessions.c.expires_at <= now))
    conn.execute(
        sessions.insert().values(
            id_hash=secret.digest(session_id),
            username=username,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return session_id


def thd_user_for_session(conn: sa.Connection, session_id: str) -> User | None:
    hashed = secret.digest(session_id)
    row = conn.execute(
        sa.select(sessions.c.id_hash, sessions.c.expires_at, users)
        .join(users, users.c.username == sessions.c.username)
        .where(sessions.c.id_hash == hashed)
    ).first()
    if row is None or not secret.same(row.id_hash, hashed) or row.expires_at <= utcnow():
        return None
    return User(**{f: getattr(row, f) for f in User.__dataclass_fields__})


def thd_delete_session(conn: sa.Connection, session_id: str) -> None:
    conn.execute(sessions.delete().where(sessions.c.id_hash == secret.digest(session_id)))
