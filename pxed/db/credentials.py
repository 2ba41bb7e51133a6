"""Machine credentials: bearer tokens for the management OS, scoped to one
machine and a set of images, with an expiry, revocable."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from pxed import secret
from pxed.db.schema import machine_credentials, utcnow


@dataclass(frozen=True)
class MachineCredential:
    id: int
    machine_id: int
    image_uuids: frozenset[str]
    expires_at: dt.datetime


def thd_mint(
    conn: sa.Connection, machine_id: int, image_uuids: frozenset[str], lifetime: dt.timedelta
) -> str:
    """A new credential; the token is returned here and never again."""
    now = utcnow()
    conn.execute(machine_credentials.delete().where(machine_credentials.c.expires_at <= now))
    token = secret.new(secret.MACHINE_TOKEN)
    conn.execute(
        machine_credentials.insert().values(
            machine_id=machine_id,
            token_hash=secret.digest(token),
            image_uuids=" ".join(sorted(image_uuids)),
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


def thd_lookup(conn: sa.Connection, token: str) -> MachineCredential | None:
    hashed = secret.digest(token)
    row = conn.execute(
        sa.select(machine_credentials).where(machine_credentials.c.token_hash == hashed)
    ).first()
    if (
        row is None
        or not secret.same(row.token_hash, hashed)
        or row.revoked_at is not None
        or row.expires_at <= utcnow()
    ):
        return None
    return MachineCredential(
        id=row.id,
        machine_id=row.machine_id,
        image_uuids=frozenset(row.image_uuids.split()),
        expires_at=row.expires_at,
    )


def thd_revoke_all(conn: sa.Connection, machine_id: int) -> int:
    """Revoke every live credential of a machine (its setup ended)."""
    return conn.execute(
        machine_credentials.update()
        .where(
            machine_credentials.c.machine_id == machine_id,
            machine_credentials.c.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    ).rowcount
