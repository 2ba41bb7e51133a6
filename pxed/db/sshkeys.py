"""Users' SSH public keys: what the management OS writes into the machines
a user deploys (cloud-init's ``ssh_authorized_keys``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from pxed import sshkey
from pxed.db import events
from pxed.db.errors import ConflictError, NotFoundError
from pxed.db.schema import user_ssh_keys, utcnow
from pxed.db.users import thd_id
from pxed.sshkey import PublicKey

# A bound on what one user can make pxed store and write into a machine.
MAX_KEYS_PER_USER = 64


@dataclass(frozen=True)
class SSHKey:
    id: int
    type: str
    blob: str
    comment: str
    fingerprint: str
    bits: int
    created_at: dt.datetime

    @property
    def line(self) -> str:
        return sshkey.line(self.type, self.blob, self.comment)


_COLUMNS = tuple(user_ssh_keys.c[f] for f in SSHKey.__dataclass_fields__)


def thd_list(conn: sa.Connection, username: str) -> list[SSHKey]:
    return thd_list_by_id(conn, thd_id(conn, username))


def thd_list_by_id(conn: sa.Connection, user_id: int) -> list[SSHKey]:
    rows = conn.execute(
        sa.select(*_COLUMNS).where(user_ssh_keys.c.user_id == user_id).order_by(user_ssh_keys.c.id)
    )
    return [SSHKey(**r._mapping) for r in rows]


def thd_add(conn: sa.Connection, username: str, key: PublicKey, actor: str) -> SSHKey:
    user_id = thd_id(conn, username)
    held = conn.execute(
        sa.select(user_ssh_keys.c.fingerprint).where(user_ssh_keys.c.user_id == user_id)
    ).scalars()
    held = list(held)
    if key.fingerprint in held:
        raise ConflictError(f"user {username!r} already has the key {key.fingerprint}")
    if len(held) >= MAX_KEYS_PER_USER:
        raise ConflictError(f"user {username!r} has {MAX_KEYS_PER_USER} keys, the most one may")
    key_id = conn.execute(
        user_ssh_keys.insert().values(
            user_id=user_id,
            type=key.type,
            blob=key.blob,
            comment=key.comment,
            fingerprint=key.fingerprint,
            bits=key.bits,
            created_at=utcnow(),
        )
    ).inserted_primary_key[0]
    events.thd_record(
        conn, actor, "user.key.add", "user", username, f"id={key_id} {key.fingerprint}"
    )
    row = conn.execute(sa.select(*_COLUMNS).where(user_ssh_keys.c.id == key_id)).one()
    return SSHKey(**row._mapping)


def thd_delete(conn: sa.Connection, username: str, key_id: int, actor: str) -> None:
    user_id = thd_id(conn, username)
    fingerprint = conn.execute(
        sa.select(user_ssh_keys.c.fingerprint).where(
            user_ssh_keys.c.id == key_id, user_ssh_keys.c.user_id == user_id
        )
    ).scalar()
    if fingerprint is None:
        raise NotFoundError(f"no key {key_id} for user {username!r}")
    conn.execute(user_ssh_keys.delete().where(user_ssh_keys.c.id == key_id))
    events.thd_record(
        conn, actor, "user.key.delete", "user", username, f"id={key_id} {fingerprint}"
    )
