"""What the boot answers are decided from, read in one transaction: every
machine's boot fields by MAC, its current work and that work's images,
the live machine and enlistment credentials, and how many enlisted
machines wait for an admin.

``DEPENDS`` names the writes (pxed.db.written) that can change what
``thd_load`` reads; the view loads again after those and no others.  It is
written beside the queries it describes: a column read here and not named
there would leave the view stale after a write to it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass, field

import sqlalchemy as sa

from pxed.db import credentials, enlist, queue
from pxed.db.queue import CurrentWork
from pxed.db.schema import machine_macs, machines

# What a boot answer reads of a machine.
MACHINE_COLUMNS = (
    machines.c.id,
    machines.c.managed,
    machines.c.architecture,
    machines.c.image_uuid,
)

DEPENDS = frozenset(
    {
        # A machine made, deleted or changed in what the answer reads (not
        # its name, state or last_seen: every log line sets last_seen).
        "machines:insert",
        "machines:delete",
        *(f"machines.{c.name}" for c in MACHINE_COLUMNS),
        "machine_macs",
        # Work queued, or moving between states (queue.thd_current_all
        # reads machine_id and state; BootInform, completion, cancelling).
        "boot_setups:insert",
        "boot_setups:delete",
        "boot_setups.state",
        "boot_setups.machine_id",
        "boot_setup_images",
        # A credential revoked or gone.  A new one is not a change: one
        # minted here goes into the view at once (BootView.minted), one
        # minted by another server is found again by the next mint here
        # (the same token).  Binding it (bound_address) changes no answer.
        "machine_credentials:delete",
        *(
            f"machine_credentials.{name}"
            for name in ("revoked_at", "expires_at", "machine_id", "work_id", "nonce", "token_hash")
        ),
        "enlist_credentials:update",
        "enlist_credentials:delete",
        # Enlisted machines waiting for an admin count towards
        # max_enlisting (enlist.thd_waiting: managed, and the source of
        # the inventory).
        "machine_hardware:insert",
        "machine_hardware:delete",
        "machine_hardware.source",
    }
)


@dataclass(frozen=True)
class BootMachine:
    id: int
    managed: bool
    architecture: str
    # Its machine image: always in its credential's scope.
    image_uuid: str


@dataclass(frozen=True)
class BootEntry:
    machine: BootMachine
    # In progress, else the oldest queued: what a netboot now would do.
    work: CurrentWork | None

    @property
    def scope(self) -> frozenset[str]:
        """The images its credential may read and write."""
        found = {self.machine.image_uuid}
        if self.work is not None:
            found |= set(self.work.image_uuids)
        return frozenset(found)

    @property
    def work_id(self) -> int | None:
        return None if self.work is None else self.work.id


@dataclass(frozen=True)
class Snapshot:
    by_mac: dict[str, BootEntry]
    # (machine id, work id) -> (token, expiry) of each live credential
    tokens: dict[tuple[int, int | None], tuple[str, dt.datetime]] = field(default_factory=dict)
    # MAC -> (token, expiry) of each live enlistment credential
    enlisting: dict[str, tuple[str, dt.datetime]] = field(default_factory=dict)
    # Machines that enlisted and wait for an admin (they count towards
    # max_enlisting with the live enlistment credentials).
    waiting: int = 0
    # MACs refused an enlistment credential since this snapshot was read
    # (max_enlisting reached): answered "local disk" without asking again.
    refused: set[str] = field(default_factory=set)

    def updated(self, part: Snapshot, machine_ids: Collection[int]) -> Snapshot:
        """This snapshot with the entries and credentials of *machine_ids*
        as *part* (``thd_load`` of them) has them.  A change that concerns
        some machines only moves no MAC between machines (pxed.boot.view),
        so the other machines' entries stand."""
        ids = set(machine_ids)
        return Snapshot(
            {m: e for m, e in self.by_mac.items() if e.machine.id not in ids} | part.by_mac,
            {k: t for k, t in self.tokens.items() if k[0] not in ids} | part.tokens,
            part.enlisting,
            part.waiting,
            self.refused,
        )


def thd_load(
    conn: sa.Connection, key: bytes, machine_ids: Collection[int] | None = None
) -> Snapshot:
    """Everything a boot answer reads, in one read transaction (one
    snapshot); *key* derives the credentials' tokens.  With *machine_ids*,
    only those machines' entries and credentials (``Snapshot.updated``
    puts them in a whole one): what work queued for a rack changes."""
    current = queue.thd_current_all(conn, machine_ids)
    machines_q = sa.select(*MACHINE_COLUMNS)
    macs_q = sa.select(machine_macs.c.mac, machine_macs.c.machine_id)
    if machine_ids is not None:
        machines_q = machines_q.where(machines.c.id.in_(sorted(machine_ids)))
        macs_q = macs_q.where(machine_macs.c.machine_id.in_(sorted(machine_ids)))
    entries = {
        row.id: BootEntry(BootMachine(**row._mapping), current.get(row.id))
        for row in conn.execute(machines_q)
    }
    by_mac = {mac: entries[machine_id] for mac, machine_id in conn.execute(macs_q)}
    return Snapshot(
        by_mac,
        credentials.thd_live_tokens(conn, key, machine_ids),
        enlist.thd_live_tokens(conn, key),
        enlist.thd_waiting(conn),
    )
