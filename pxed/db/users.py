"""Users: accounts, roles and what happens to their things when they go
(their API tokens and browser sessions are in pxed.db.tokens)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import sqlalchemy as sa

from pxed.db import events
from pxed.db.errors import ConflictError, InvalidError, NotFoundError
from pxed.db.schema import (
    boot_setup_images,
    boot_setups,
    builds,
    image_setups,
    images,
    machine_credentials,
    machines,
    users,
    utcnow,
)

ROLES = ("user", "moderator", "admin")
USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Path segments under /user/ that are routes, not users.
RESERVED = frozenset({"me", "logout", "login", "session"})


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
class UserFields:
    name: str | None = None
    email: str | None = None
    role: str | None = None


def check_username(username: str) -> str:
    # fullmatch: with match, "$" also matches before a trailing newline.
    if not USERNAME.fullmatch(username) or username in RESERVED:
        raise InvalidError(
            "Username: 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter "
            "or digit" + (f" ('{username}' is reserved)" if username in RESERVED else "")
        )
    return username


def check_role(role: str) -> str:
    """The role, lower case ("User" as the original's tests wrote it)."""
    role = role.lower()
    if role not in ROLES:
        raise InvalidError(f"Role: must be one of {', '.join(ROLES)}")
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


def thd_get_or_404(conn: sa.Connection, username: str) -> User:
    """thd_get, or NotFoundError."""
    found = thd_get(conn, username)
    if found is None:
        raise NotFoundError(f"no user {username!r}")
    return found


def thd_id(conn: sa.Connection, username: str) -> int:
    """id_of, or NotFoundError."""
    found = id_of(conn, username)
    if found is None:
        raise NotFoundError(f"no user {username!r}")
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
        raise ConflictError(f"user {username!r} already exists")
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
        raise NotFoundError(f"no user {username!r}")
    values = {k: v for k, v in vars(fields).items() if v is not None}
    if "role" in values:
        check_role(values["role"])
        if user.is_admin and values["role"] != "admin" and thd_count_admins(conn) <= 1:
            raise ConflictError("the last admin cannot be demoted")
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


def clear_lease_setup(conn: sa.Connection, which: sa.ColumnElement[bool]) -> None:
    """Machines re-imaged at a lease's end with a setup about to be deleted
    power off instead (a machine's LeaseSetupUUID goes with the setup)."""
    chosen = sa.select(image_setups.c.uuid).where(which)
    conn.execute(
        machines.update()
        .where(machines.c.lease_setup_uuid.in_(chosen))
        .values(lease_setup_uuid=None, lease_end="poweroff")
    )


def thd_delete(conn: sa.Connection, username: str, actor: str, on_delete: str = "admin") -> Deleted:
    """Delete the user, in one transaction with what he owned: his queued
    and running work ends (never boots, credentials revoked), then his
    images, setups, work and builds go to an admin or are removed."""
    user = thd_get(conn, username)
    if user is None:
        raise NotFoundError(f"no user {username!r}")
    if user.is_admin and thd_count_admins(conn) <= 1:
        raise ConflictError("the last admin cannot be removed")
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
            raise ConflictError(f"machine {used!r} boots an image of {username!r}; delete it first")
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
        clear_lease_setup(conn, owned[1])
        for table, where in zip(
            (builds, boot_setups, image_setups, images), owned[::-1], strict=True
        ):
            conn.execute(table.delete().where(where))
    else:
        heir = _heir(conn, user, actor)
        for table, where in zip((images, image_setups, boot_setups, builds), owned, strict=True):
            conn.execute(table.update().where(where).values(owner_id=heir.id))
    # His data may be on machines' disks still: their next work erases it.
    conn.execute(
        machines.update().where(machines.c.last_user_id == user.id).values(last_user_id=None)
    )
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
