"""Users, their API tokens and their browser sessions."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import sqlalchemy as sa

from pxed import secret
from pxed.db import events
from pxed.db.schema import api_tokens, sessions, users, utcnow
from pxed.errors import BadRequest, Conflict, NotFound

ROLES = ("user", "moderator", "admin")
USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Path segments under /user/ that are routes, not users.
RESERVED = frozenset({"me", "logout", "login"})


@dataclass(frozen=True)
class User:
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


def thd_delete(conn: sa.Connection, username: str, actor: str) -> None:
    user = thd_get(conn, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    if user.is_admin and thd_count_admins(conn) <= 1:
        raise Conflict("the last admin cannot be removed")
    conn.execute(users.delete().where(users.c.username == username))
    events.thd_record(conn, actor, "user.delete", "user", username)


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


def thd_user_for_token(conn: sa.Connection, token: str) -> User | None:
    hashed = secret.digest(token)
    row = conn.execute(
        sa.select(api_tokens.c.id, api_tokens.c.token_hash, api_tokens.c.expires_at, users)
        .join(users, users.c.username == api_tokens.c.username)
        .where(api_tokens.c.token_hash == hashed)
    ).first()
    if row is None or not secret.same(row.token_hash, hashed):
        return None
    now = utcnow()
    if row.expires_at is not None and row.expires_at <= now:
        return None
    conn.execute(api_tokens.update().where(api_tokens.c.id == row.id).values(last_used_at=now))
    return User(**{f: getattr(row, f) for f in User.__dataclass_fields__})


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
