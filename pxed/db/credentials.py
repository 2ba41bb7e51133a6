"""Machine credentials: bearer tokens for the management OS, scoped to one
machine and a set of images, with an expiry, revocable.

One credential per work item: minted once the work is queued, ahead of
the first boot answer that serves it (or by that answer, when it comes
first), and repeated in later answers.  Its token is not stored: it is
derived again from the server's key (pxed.boot.key, which the caller
passes in) and a random nonce kept in the row; the row keeps only the
token's hash for lookup.  The first BootInform binds it to that client's
address; a credential ends with its work (completed, cancelled or
deleted) or at its expiry.  The boot answers and the routes use these
queries through pxed.boot.credentials.Credentials; the revocations run
inside the transactions that end the work (pxed.db.queue, pxed.db.users)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa

from pxed import secret
from pxed.db import events
from pxed.db.schema import boot_setups, machine_credentials, machines, utcnow

# A credential closer than this to its end is not handed out again: the
# management OS must still hold a good one once it has booted.
FRESH = dt.timedelta(minutes=10)

# Work in these states keeps its credential alive (pxed.db.queue's names).
LIVE_WORK = ("queued", "in-progress")


@dataclass(frozen=True)
class MachineCredential:
    id: int
    machine_id: int
    image_uuids: frozenset[str]
    expires_at: dt.datetime
    work_id: int | None = None
    # The client address of the first BootInform; None while unbound.
    bound_address: str | None = None

    def admits(self, address: str | None) -> bool:
        """May a request from *address* use it?  Anyone while unbound (the
        boot networks bound who could be handed it), then only the client
        that bound it."""
        return self.bound_address is None or self.bound_address == (address or "")


def derive(key: bytes, work_id: int | None, nonce: str) -> str:
    """The token of the credential with *nonce*: HMAC-SHA256 under the
    server's key, so the database alone does not give it away."""
    return secret.derive(key, secret.MACHINE_TOKEN, f"pxm:{work_id or 0}:{nonce}")


def thd_for_works(
    conn: sa.Connection,
    key: bytes,
    wanted: list[tuple[int, int | None, frozenset[str]]],
    lifetime: dt.timedelta,
) -> dict[tuple[int, int | None], tuple[str, dt.datetime]]:
    """(machine id, work id) -> token and expiry, for each (machine id,
    work id, images in scope) of *wanted* (work id None: no work, under
    the "always" policy): the work's live credential if it has one, else
    a new one, all in one transaction.  A work that ended meanwhile gets
    none.  Bound or not, the same token: once bound it works only from
    the bound client.  Minted ahead of the first answer (the boot view,
    after work is queued) or for an answer; nothing is recorded: the
    answer that first serves the work is (pxed.boot.answerlog)."""
    now = utcnow()
    conn.execute(machine_credentials.delete().where(machine_credentials.c.expires_at <= now))
    works = [work_id for _, work_id, _ in wanted if work_id is not None]
    live = set()
    if works:
        live = set(
            conn.execute(
                sa.select(boot_setups.c.id).where(
                    boot_setups.c.id.in_(works), boot_setups.c.state.in_(LIVE_WORK)
                )
            ).scalars()
        )
    found = {}
    # Machines locked in one order: two servers minting never deadlock.
    for machine_id, work_id, image_uuids in sorted(wanted, key=lambda w: (w[0], w[1] or 0)):
        if work_id is None or work_id in live:
            found[(machine_id, work_id)] = _live_or_new(
                conn, key, machine_id, work_id, image_uuids, lifetime, now
            )
    return found


def _live_or_new(
    conn: sa.Connection,
    key: bytes,
    machine_id: int,
    work_id: int | None,
    image_uuids: frozenset[str],
    lifetime: dt.timedelta,
    now: dt.datetime,
) -> tuple[str, dt.datetime]:
    # Serialise mints for one machine (PostgreSQL), so two at once mint
    # one credential, not two.
    conn.execute(sa.select(machines.c.id).where(machines.c.id == machine_id).with_for_update())
    mc = machine_credentials.c
    same_work = mc.work_id.is_(None) if work_id is None else mc.work_id == work_id
    where = sa.and_(mc.machine_id == machine_id, same_work)
    for row in conn.execute(sa.select(machine_credentials).where(where, mc.revoked_at.is_(None))):
        token = _token_of(key, row)
        if token is not None and row.expires_at - now >= FRESH:
            return token, row.expires_at
    # None usable (revoked, or from before the key or the nonce existed):
    # those rows go, a new one takes their place.
    conn.execute(machine_credentials.delete().where(where))
    nonce = secrets.token_hex(32)
    token = derive(key, work_id, nonce)
    expires = now + lifetime
    conn.execute(
        machine_credentials.insert().values(
            machine_id=machine_id,
            work_id=work_id,
            nonce=nonce,
            token_hash=secret.digest(token),
            image_uuids=" ".join(sorted(image_uuids)),
            created_at=now,
            expires_at=expires,
        )
    )
    return token, expires


def _token_of(key: bytes, row: sa.Row) -> str | None:
    """The token of a credential row, if it can be derived (None for rows
    from before the key or the nonce existed)."""
    if row.nonce is None:
        return None
    return secret.derived_matches(derive(key, row.work_id, row.nonce), row.token_hash)


def thd_live_tokens(
    conn: sa.Connection, key: bytes, machine_ids: Collection[int] | None = None
) -> dict[tuple[int, int | None], tuple[str, dt.datetime]]:
    """(machine id, work id) -> (token, expiry) of every live credential
    (of the machines of *machine_ids*): for the boot answers' view, no
    query per answer."""
    mc = machine_credentials.c
    found = {}
    q = sa.select(machine_credentials).where(mc.revoked_at.is_(None), mc.expires_at > utcnow())
    if machine_ids is not None:
        q = q.where(mc.machine_id.in_(sorted(machine_ids)))
    rows = conn.execute(q)
    for row in rows:
        token = _token_of(key, row)
        if token is not None:
            found[(row.machine_id, row.work_id)] = (token, row.expires_at)
    return found


def thd_lookup(conn: sa.Connection, token: str) -> MachineCredential | None:
    """The live credential of *token*: not revoked, not expired, and its
    work (if it has one) still queued or in progress."""
    hashed = secret.digest(token)
    row = conn.execute(
        sa.select(machine_credentials, boot_setups.c.state)
        .select_from(
            machine_credentials.outerjoin(
                boot_setups, boot_setups.c.id == machine_credentials.c.work_id
            )
        )
        .where(machine_credentials.c.token_hash == hashed)
    ).first()
    if (
        row is None
        or not secret.same(row.token_hash, hashed)
        or row.revoked_at is not None
        or row.expires_at <= utcnow()
        or (row.work_id is not None and row.state not in LIVE_WORK)
    ):
        return None
    return MachineCredential(
        id=row.id,
        machine_id=row.machine_id,
        image_uuids=frozenset(row.image_uuids.split()),
        expires_at=row.expires_at,
        work_id=row.work_id,
        bound_address=row.bound_address,
    )


def thd_bind(conn: sa.Connection, cred: MachineCredential, address: str, actor: str) -> str:
    """Bind *cred* to *address* (BootInform) unless it is bound already;
    the address it is bound to.  The binding is recorded once."""
    bound = conn.execute(
        machine_credentials.update()
        .where(
            machine_credentials.c.id == cred.id,
            machine_credentials.c.bound_address.is_(None),
        )
        .values(bound_address=address, bound_at=utcnow())
    ).rowcount
    if bound:
        events.thd_record(
            conn,
            actor,
            "credential.bind",
            "machine",
            str(cred.machine_id),
            f"credential {cred.id} (work={cred.work_id}) bound to {address}",
        )
        return address
    found = conn.execute(
        sa.select(machine_credentials.c.bound_address).where(machine_credentials.c.id == cred.id)
    ).scalar()
    return found if found is not None else address


def thd_refused(
    conn: sa.Connection, cred: MachineCredential, address: str | None, bound_to: str, what: str
) -> None:
    """Record a bound credential presented by another client (repeats are
    counted, not added)."""
    events.thd_record_change(
        conn,
        f"machine:{cred.machine_id}",
        "credential.refused",
        "machine",
        str(cred.machine_id),
        f"credential {cred.id} bound to {bound_to} presented from {address or '-'}",
        what,
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


def thd_revoke_work(conn: sa.Connection, work_id: int) -> int:
    """Revoke the credential of one work item (it was cancelled)."""
    return conn.execute(
        machine_credentials.update()
        .where(
            machine_credentials.c.work_id == work_id,
            machine_credentials.c.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    ).rowcount
