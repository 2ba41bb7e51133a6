"""Machine and enlistment credentials behind one object: the boot answers
mint them, the routes look them up, bind, refuse and spend them.

A machine credential (``pxm_…``) is minted once per work item, when the
work is queued (``ahead``; else by pxed.boot.minting, before the first
answer that serves it), and repeated in later answers; the
first BootInform binds it to its client's address; it ends with its work.
An enlistment credential (``pxe_…``) is minted once per unknown MAC and
can only register that MAC's inventory, which spends it.  Their queries
are ``thd_*`` functions of pxed.db.credentials and pxed.db.enlist, where
every query of pxed is; revoking a work's credential happens in the same
transaction as ending the work (pxed.db.queue, pxed.db.users), so that no
answer sees one without the other."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from pxed import secret
from pxed.boot.snapshot import BootEntry
from pxed.db import credentials, enlist
from pxed.db.credentials import MachineCredential
from pxed.db.enlist import EnlistCredential
from pxed.db.pool import DBPool
from pxed.db.queue import Work


class Credentials:
    def __init__(self, db: DBPool, key: bytes, lifetime: dt.timedelta, max_enlisting: int) -> None:
        self._db = db
        # The server's key (pxed.boot.key), read once: tokens derive from it.
        self.key = key
        self._lifetime = lifetime
        self._max_enlisting = max_enlisting

    # -- minted for boot answers

    async def for_works(
        self, entries: list[BootEntry]
    ) -> dict[tuple[int, int | None], tuple[str, dt.datetime]]:
        """(machine id, work id) -> token and expiry for each entry's work
        (none for a work that ended meanwhile), in one write: scoped to
        the machine's own image and the images of its work, the same in
        every answer until the work ends."""
        return await self._db.run(
            credentials.thd_for_works,
            self.key,
            [(e.machine.id, e.work_id, e.scope) for e in entries],
            self._lifetime,
        )

    def ahead(self, thd: Callable[..., Work]) -> Callable[..., Work]:
        """*thd* (one that queues work, in its transaction) with the work's
        credential minted in the same transaction: the first answer that
        serves it is then as cheap as a repeat.  The token is derived again
        when the boot view loads it; nothing here keeps or says it."""

        def run(conn: sa.Connection, *args: Any, **kwargs: Any) -> Work:
            work = thd(conn, *args, **kwargs)
            if work.machine is not None:
                scope = frozenset({work.machine.image_uuid, *(i.image_uuid for i in work.images)})
                credentials.thd_for_works(
                    conn, self.key, [(work.machine_id, work.id, scope)], self._lifetime
                )
            return work

        return run

    async def for_enlist(self, mac: str) -> tuple[str, dt.datetime] | None:
        """The enlistment token (and expiry) of an unknown MAC; None when
        max_enlisting machines are enlisting or waiting already."""
        return await self._db.run(
            enlist.thd_for_answer, self.key, mac, self._lifetime, self._max_enlisting
        )

    # -- presented to the routes

    @staticmethod
    def kind(token: str) -> str | None:
        """``machine`` or ``enlist`` for a token of ours, else None."""
        if token.startswith(secret.MACHINE_TOKEN):
            return "machine"
        if token.startswith(secret.ENLIST_TOKEN):
            return "enlist"
        return None

    async def machine(self, token: str) -> MachineCredential | None:
        """The live machine credential of *token* (not revoked, not
        expired, its work not ended)."""
        return await self._db.run(credentials.thd_lookup, token)

    async def enlisting(self, token: str) -> EnlistCredential | None:
        """The live enlistment credential of *token* (not spent, not expired)."""
        return await self._db.read(enlist.thd_lookup, token)

    async def refuse(self, cred: MachineCredential, address: str | None, what: str) -> None:
        """Record that *address* presented *cred*, bound to another client
        (``cred.admits`` said no; *what*: the request)."""
        await self._refused(cred, address, cred.bound_address or "", what)

    async def bind(self, cred: MachineCredential, address: str, actor: str) -> bool:
        """Bind *cred* to *address* (BootInform) unless it is bound; False
        (recorded) if another client bound it in between."""
        bound = await self._db.run(credentials.thd_bind, cred, address, actor)
        if bound == address:
            return True
        await self._refused(cred, address, bound, "GET BootInform")
        return False

    async def _refused(
        self, cred: MachineCredential, address: str | None, bound: str, what: str
    ) -> None:
        await self._db.run(credentials.thd_refused, cred, address, bound, what)

    async def spend(self, cred: EnlistCredential) -> bool:
        """The enlistment credential is used up (its machine exists now);
        False if it was already."""
        return await self._db.run(enlist.thd_spend, cred)
