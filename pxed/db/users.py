"""Users, their API tokens and their browser sessions."""

from __future__ import annotations

import datetime as dt
import re
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from twisted.logger import Logger
from twisted.python.failure import Failure

from pxed import secret
from pxed.db import events
from pxed.db.schema import (
    api_tokens,
    boot_setup_images,
    boot_setups,
    builds,
    image_setups,
    images,
    machine_credentials,
    machines,
    sessions,
    users,
    utcnow,
)
from pxed.errors import BadRequest, Conflict, NotFound

if TYPE_CHECKING:
    from pxed.db.pool import DBPool

log = Logger()

ROLES = ("user", "moderator", "admin")
USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Path segments under /user/ that are routes, not users.
RESERVED = frozenset({"me", "logout", "login"})


@dataclass(frozen=True)
class User:
    # What everything the user owns refers to: a later user who takes the
    # name of a deleted one is someone else.
    id: int
    username: str
    name: str
    email: str
    role: str
    github_id: int | None
    created_at: dt.datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_staff(self) -> bool:
        return self.role in ("moderator", "admin")


@dataclass(frozen=True)
class Token:
    id: int
    username: str
    name: str
    prefix: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None


@dataclass(frozen=True)
class UserFields:
    name: str | None = None
    email: str | None = None
    role: str | None = None


def check_username(username: str) -> str:
    # fullmatch: with match, "$" also matches before a trailing newline.
    if not USERNAME.fullmatch(username) or username in RESERVED:
        raise BadRequest(
            "Username: 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter "
            "or digit" + (f" ('{username}' is reserved)" if username in RESERVED else "")
        )
    return username


def check_role(role: str) -> str:
    """The role, lower case ("User" as the original's tests wrote it)."""
    role = role.lower()
    if role not in ROLES:
        raise BadRequest(f"Role: must be one of {', '.join(ROLES)}")
    return role


def _user(row: sa.Row) -> User:
    return User(**row._mapping)


def thd_get(conn: sa.Connection, username: str) -> User | None:
    row = conn.execute(sa.select(users).where(users.c.username == username)).first()
    return None if row is None else _user(row)


def thd_get_by_github(conn: sa.Connection, github_id: int) -> User | None:
    row = conn.execute(sa.select(users).where(users.c.github_id == github_id)).first()
    return None if row is None else _user(row)


def thd_list(conn: sa.Connection) -> list[User]:
    return [_user(r) for r in conn.execute(sa.select(users).order_by(users.c.username))]


def id_of(conn: sa.Connection, username: str) -> int | None:
    """The id of the user called *username* now (names are resolved to ids
    where requests come in), None if there is none."""
    return conn.execute(sa.select(users.c.id).where(users.c.username == username)).scalar()


def thd_id(conn: sa.Connection, username: str) -> int:
    """id_of, or 404."""
    found = id_of(conn, username)
    if found is None:
        raise NotFound(f"no user {username!r}")
    return found


def owner_name(owner_id: sa.ColumnElement[int]) -> sa.ScalarSelect[str]:
    """The owner's username beside a row that refers to him by id."""
    return sa.select(users.c.username).where(users.c.id == owner_id).scalar_subquery()


def thd_count_admins(conn: sa.Connection) -> int:
    return conn.execute(
        sa.select(sa.func.count()).select_from(users).where(users.c.role == "admin")
    ).scalar_one()


def thd_create(
    conn: sa.Connection,
    username: str,
    fields: UserFields,
    actor: str,
    github_id: int | None = None,
) -> User:
    check_username(username)
    if thd_get(conn, username) is not None:
        raise Conflict(f"user {username!r} already exists")
    conn.execute(
        users.insert().values(
            username=username,
            name=fields.name or "",
            email=fields.email or "",
            role=check_role(fields.role or "user"),
            github_id=github_id,
            created_at=utcnow(),
        )
    )
    events.thd_record(conn, actor, "user.create", "user", username, f"role={fields.role or 'user'}")
    user = thd_get(conn, username)
    assert user is not None
    return user


def thd_update(conn: sa.Connection, username: str, fields: UserFields, actor: str) -> User:
    user = thd_get(conn, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    values = {k: v for k, v in vars(fields).items() if v is not None}
    if "role" in values:
        check_role(values["role"])
        if user.is_admin and values["role"] != "admin" and thd_count_admins(conn) <= 1:
            raise Conflict("the last admin cannot be demoted")
    if values:
        conn.execute(users.update().where(users.c.username == username).values(**values))
        events.thd_record(
            conn,
            actor,
            "user.update",
            "user",
            username,
            " ".join(f"{k}={v}" for k, v in values.items()),
        )
    updated = thd_get(conn, username)
    assert updated is not None
    return updated


def thd_link_github(conn: sa.Connection, username: str, github_id: int) -> None:
    conn.execute(users.update().where(users.c.username == username).values(github_id=github_id))


# What becomes of a deleted user's images, setups, boot work and builds
# (the on_user_delete setting): handed to an admin, or removed with him.
ON_USER_DELETE = ("admin", "remove")


@dataclass(frozen=True)
class Deleted:
    """A deleted user: the images removed with him (their files go once this
    has committed) and the admin his things went to ("admin" policy)."""

    removed_images: tuple[str, ...] = ()
    heir: str | None = None


def thd_delete(conn: sa.Connection, username: str, actor: str, on_delete: str = "admin") -> Deleted:
    """Delete the user, in one transaction with what he owned: his queued
    and running work ends (never boots, credentials revoked), then his
    images, setups, work and builds go to an admin or are removed."""
    user = thd_get(conn, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    if user.is_admin and thd_count_admins(conn) <= 1:
        raise Conflict("the last admin cannot be removed")
    if on_delete not in ON_USER_DELETE:
        raise ValueError(f"on_user_delete: {on_delete!r}")
    owned = tuple(t.c.owner_id == user.id for t in (images, image_setups, boot_setups, builds))
    # What his images are to others: a machine's own image stays; queued or
    # running work that would use them ends with them.
    his_images = sa.select(images.c.uuid).where(owned[0])
    if on_delete == "remove":
        used = conn.execute(
            sa.select(machines.c.name).where(machines.c.image_uuid.in_(his_images)).limit(1)
        ).scalar()
        if used is not None:
            raise Conflict(f"machine {used!r} boots an image of {username!r}; delete it first")
        holding = sa.select(boot_setup_images.c.boot_setup_id).where(
            boot_setup_images.c.image_uuid.in_(his_images)
        )
        live = sa.or_(owned[2], boot_setups.c.id.in_(holding))
    else:
        live = owned[2]
    message = f"its owner {username!r} was deleted by {actor}"
    ended = []
    for state, to in (("queued", "cancelled"), ("in-progress", "failed")):
        where = sa.and_(live, boot_setups.c.state == state)
        ids = list(conn.execute(sa.select(boot_setups.c.id).where(where)).scalars())
        if ids:
            conn.execute(
                boot_setups.update()
                .where(boot_setups.c.id.in_(ids))
                .values(state=to, finished_at=utcnow(), message=message)
            )
            ended += ids
    if ended:
        conn.execute(
            machine_credentials.update()
            .where(
                machine_credentials.c.work_id.in_(ended),
                machine_credentials.c.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
    removed: tuple[str, ...] = ()
    heir = None
    if on_delete == "remove":
        removed = tuple(conn.execute(his_images).scalars())
        for table, where in zip(
            (builds, boot_setups, image_setups, images), owned[::-1], strict=True
        ):
            conn.execute(table.delete().where(where))
    else:
        heir = _heir(conn, user, actor)
        for table, where in zip((images, image_setups, boot_setups, builds), owned, strict=True):
            conn.execute(table.update().where(where).values(owner_id=heir.id))
    conn.execute(users.delete().where(users.c.id == user.id))
    detail = f"work ended={len(ended)}"
    detail += (
        f" images removed={len(removed)}" if heir is None else f" owned now by {heir.username}"
    )
    events.thd_record(conn, actor, "user.delete", "user", username, detail)
    return Deleted(removed, None if heir is None else heir.username)


def _heir(conn: sa.Connection, user: User, actor: str) -> User:
    """The admin who deletes the user, else the oldest admin."""
    by = thd_get(conn, actor)
    if by is not None and by.is_admin and by.id != user.id:
        return by
    row = conn.execute(
        sa.select(users)
        .where(users.c.role == "admin", users.c.id != user.id)
        .order_by(users.c.id)
        .limit(1)
    ).first()
    assert row is not None  # the last admin is never deleted
    return _user(row)


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
        raise NotFound(f"no user {username!r}")
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
        raise NotFound(f"no token {token_id} for user {username!r}")
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
