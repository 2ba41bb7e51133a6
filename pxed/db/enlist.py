"""Enlistment credentials: what an unknown machine booted to enlist gets
(config ``enlist``).  One per MAC, able to do one thing: register that
MAC's inventory, which creates the machine, unmanaged, and spends it.

Minted on the first boot answer that enlists the MAC and repeated in later
ones (the boot view holds it), so repeated netboots mint nothing more.  At
most ``max_enlisting`` machines are enlisting (a live credential) or
waiting for an admin (enlisted, not yet managed) at once: a boot network
cannot fill pxed with machines faster than admins accept or delete them.
As with machine credentials the token is derived from the server's key
and a nonce kept in the row; only its hash is stored.  Used through
pxed.boot.credentials.Credentials."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from pxed import secret
from pxed.db import events
from pxed.db.credentials import FRESH
from pxed.db.schema import enlist_credentials, machine_hardware, machine_macs, machines, utcnow


@dataclass(frozen=True)
class EnlistCredential:
    id: int
    mac: str
    expires_at: dt.datetime


def derive(key: bytes, mac: str, nonce: str) -> str:
    return secret.derive(key, secret.ENLIST_TOKEN, f"pxe:{mac}:{nonce}")


def _token_of(key: bytes, row: sa.Row) -> str | None:
    return secret.derived_matches(derive(key, row.mac, row.nonce), row.token_hash)


def thd_for_answer(
    conn: sa.Connection, key: bytes, mac: str, lifetime: dt.timedelta, limit: int
) -> tuple[str, dt.datetime] | None:
    """The token (and its expiry) for a boot answer that enlists *mac*: its
    live credential, else a new one; None when *limit* machines are
    enlisting or waiting already, or the MAC is a machine's by now."""
    now = utcnow()
    ec = enlist_credentials.c
    conn.execute(enlist_credentials.delete().where(ec.expires_at <= now))
    if conn.execute(sa.select(machine_macs.c.mac).where(machine_macs.c.mac == mac)).first():
        return None
    row = conn.execute(sa.select(enlist_credentials).where(ec.mac == mac)).first()
    if row is not None:
        token = _token_of(key, row)
        if token is not None and row.expires_at - now >= FRESH:
            return token, row.expires_at
        # About to expire, or from another key: a new one takes its place.
        conn.execute(enlist_credentials.delete().where(ec.id == row.id))
    live = conn.execute(sa.select(sa.func.count()).select_from(enlist_credentials)).scalar()
    if live + thd_waiting(conn) >= limit:
        return None
    nonce = secrets.token_hex(32)
    token = derive(key, mac, nonce)
    expires = now + lifetime
    # A second server minting for the same MAC at once fails on the unique
    # MAC; DBPool runs this again, and it finds the first's.
    conn.execute(
        enlist_credentials.insert().values(
            mac=mac,
            token_hash=secret.digest(token),
            nonce=nonce,
            created_at=now,
            expires_at=expires,
        )
    )
    events.thd_record(
        conn, "system", "enlist.offer", "mac", mac, f"expires {expires:%Y-%m-%dT%H:%M:%SZ}"
    )
    return token, expires


def thd_waiting(conn: sa.Connection) -> int:
    """Machines that enlisted and wait for an admin (not managed yet)."""
    return conn.execute(
        sa.select(sa.func.count())
        .select_from(
            machines.join(machine_hardware, machine_hardware.c.machine_id == machines.c.id)
        )
        .where(machines.c.managed.is_(False), machine_hardware.c.source == "enlist")
    ).scalar()


def thd_live_tokens(conn: sa.Connection, key: bytes) -> dict[str, tuple[str, dt.datetime]]:
    """MAC -> (token, expiry) of every live enlistment credential (for the
    boot view)."""
    found = {}
    rows = conn.execute(
        sa.select(enlist_credentials).where(enlist_credentials.c.expires_at > utcnow())
    )
    for row in rows:
        token = _token_of(key, row)
        if token is not None:
            found[row.mac] = (token, row.expires_at)
    return found


def thd_lookup(conn: sa.Connection, token: str) -> EnlistCredential | None:
    hashed = secret.digest(token)
    row = conn.execute(
        sa.select(enlist_credentials).where(enlist_credentials.c.token_hash == hashed)
    ).first()
    if row is None or not secret.same(row.token_hash, hashed) or row.expires_at <= utcnow():
        return None
    return EnlistCredential(row.id, row.mac, row.expires_at)


def thd_spend(conn: sa.Connection, cred: EnlistCredential) -> bool:
    """The credential is used up (its machine exists now); False if it was
    already."""
    return bool(
        conn.execute(enlist_credentials.delete().where(enlist_credentials.c.id == cred.id)).rowcount
    )
