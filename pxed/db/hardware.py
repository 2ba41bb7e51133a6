"""Machines' hardware inventories: the last one the management OS sent
for each machine, when, and from which boot (enlist or deploy)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pxed.db import events
from pxed.db.schema import machine_hardware, machines, utcnow


@dataclass(frozen=True)
class Inventory:
    """A checked inventory (pxed.web.inventory): ``data`` is what is
    stored and answered, the rest the figures machines are filtered by."""

    arch: str
    cpu_count: int
    memory: int
    largest_disk: int
    data: dict[str, Any]


@dataclass(frozen=True)
class Hardware:
    machine_id: int
    seen_at: dt.datetime
    source: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Filters:
    """GET /machines?…: None is "any"."""

    arch: str | None = None
    min_memory: int | None = None
    min_cpus: int | None = None
    disk_min_size: int | None = None

    @property
    def need_hardware(self) -> bool:
        return any(v is not None for v in (self.min_memory, self.min_cpus, self.disk_min_size))


def summary(inv: Inventory) -> str:
    """One line for the event log."""
    data = inv.data
    disks = ",".join(f"{d['Name']}={d['Size']}" for d in data["Disks"])
    nics = ",".join(n["MAC"] for n in data["NICs"])
    return (
        f"{inv.arch} {data['Firmware']} cpus={inv.cpu_count} memory={inv.memory} "
        f"disks={disks or '-'} nics={nics or '-'}"
    )


def thd_store(
    conn: sa.Connection, machine_id: int, inv: Inventory, source: str, actor: str
) -> Hardware:
    """The machine's inventory is now *inv*, seen now."""
    now = utcnow()
    values = dict(
        seen_at=now,
        source=source,
        arch=inv.arch,
        cpu_count=inv.cpu_count,
        memory=inv.memory,
        largest_disk=inv.largest_disk,
        data=json.dumps(inv.data, sort_keys=True),
    )
    mh = machine_hardware.c
    old = conn.execute(sa.select(mh.data).where(mh.machine_id == machine_id)).scalar()
    if old is None:
        conn.execute(machine_hardware.insert().values(machine_id=machine_id, **values))
    else:
        conn.execute(machine_hardware.update().where(mh.machine_id == machine_id).values(**values))
    # Every boot sends it: the log says when it is new or changed.
    if old != values["data"]:
        action = "hardware.new" if old is None else "hardware.changed"
        events.thd_record(conn, actor, action, "machine", str(machine_id), summary(inv))
    return Hardware(machine_id, now, source, inv.data)


def thd_get(conn: sa.Connection, machine_id: int) -> Hardware | None:
    row = conn.execute(
        sa.select(machine_hardware).where(machine_hardware.c.machine_id == machine_id)
    ).first()
    if row is None:
        return None
    return Hardware(row.machine_id, row.seen_at, row.source, json.loads(row.data))


def thd_matching(conn: sa.Connection, filters: Filters) -> set[int]:
    """The ids of the machines *filters* admit."""
    mh = machine_hardware.c
    q = sa.select(machines.c.id)
    if filters.need_hardware:
        q = q.join(machine_hardware, mh.machine_id == machines.c.id)
    if filters.arch is not None:
        q = q.where(machines.c.architecture == filters.arch)
    if filters.min_memory is not None:
        q = q.where(mh.memory >= filters.min_memory)
    if filters.min_cpus is not None:
        q = q.where(mh.cpu_count >= filters.min_cpus)
    if filters.disk_min_size is not None:
        q = q.where(mh.largest_disk >= filters.disk_min_size)
    return set(conn.execute(q).scalars())
