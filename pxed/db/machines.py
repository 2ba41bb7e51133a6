"""Machines and their MAC addresses."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from pxed.db import events, users
from pxed.db import images as images_db
from pxed.db import power as power_db
from pxed.db.errors import ConflictError, InvalidError, NotFoundError
from pxed.db.power import NO_POWER, PowerSettings
from pxed.db.schema import image_setups, images, machine_macs, machines, utcnow

MACHINE_IMAGE_SIZE = 64 * 1024 * 1024

# What the management OS erases when another user's work comes (pxed.agent.erase).
ERASE_POLICIES = ("none", "metadata", "discard", "full")


@dataclass(frozen=True)
class Machine:
    id: int
    name: str
    architecture: str
    managed: bool
    state: str
    last_seen: dt.datetime | None
    image_uuid: str
    created_at: dt.datetime
    macs: tuple[str, ...]
    # How pxed reaches its BMC (driver "none": it does not).
    power: PowerSettings = NO_POWER
    erase: str = "metadata"
    lease_end: str = "poweroff"
    lease_setup_uuid: str | None = None
    # Whose data its disks may hold (None: nobody's known, as a new machine).
    last_user: str | None = None


@dataclass(frozen=True)
class MachineFields:
    """What a client may set; None means "leave as it is" (or default on create)."""

    name: str | None = None
    architecture: str | None = None
    managed: bool | None = None
    macs: tuple[str, ...] | None = None
    # New power settings (their password already sealed); with
    # power_keep_password the stored password stays when they bring none.
    power: PowerSettings | None = None
    power_keep_password: bool = True
    erase: str | None = None
    lease_end: str | None = None
    # "" clears it.
    lease_setup_uuid: str | None = None


def _load(conn: sa.Connection, where: sa.ColumnElement[bool] | None = None) -> list[Machine]:
    columns = (
        *(c for c in machines.c if c.name != "last_user_id"),
        users.owner_name(machines.c.last_user_id).label("last_user"),
    )
    q = sa.select(*columns).order_by(machines.c.id)
    if where is not None:
        q = q.where(where)
    rows = conn.execute(q).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    macs: dict[int, list[str]] = {i: [] for i in ids}
    for m in conn.execute(
        sa.select(machine_macs.c.machine_id, machine_macs.c.mac)
        .where(machine_macs.c.machine_id.in_(ids))
        .order_by(machine_macs.c.position)
    ):
        macs[m.machine_id].append(m.mac)
    power = power_db.load(conn, ids)
    return [
        Machine(**r._mapping, macs=tuple(macs[r.id]), power=power.get(r.id, NO_POWER)) for r in rows
    ]


def load_by_id(conn: sa.Connection, ids: Iterable[int]) -> dict[int, Machine]:
    """The machines of *ids* by id, in two queries."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {m.id: m for m in _load(conn, machines.c.id.in_(wanted))}


def _id_for_mac(conn: sa.Connection, mac: str) -> int | None:
    return conn.execute(
        sa.select(machine_macs.c.machine_id).where(machine_macs.c.mac == mac)
    ).scalar()


def thd_list(conn: sa.Connection) -> list[Machine]:
    return _load(conn)


def thd_by_id(conn: sa.Connection, machine_id: int) -> Machine:
    found = _load(conn, machines.c.id == machine_id)
    if not found:
        raise NotFoundError(f"no machine {machine_id}")
    return found[0]


def thd_get(conn: sa.Connection, mac: str) -> Machine | None:
    found = _load(
        conn,
        machines.c.id
        == sa.select(machine_macs.c.machine_id).where(machine_macs.c.mac == mac).scalar_subquery(),
    )
    return found[0] if found else None


def _check_free(conn: sa.Connection, fields: MachineFields, machine_id: int | None) -> None:
    """Raise ConflictError if a MAC or the name already belongs to another machine."""
    for mac in fields.macs or ():
        owner = _id_for_mac(conn, mac)
        if owner is not None and owner != machine_id:
            other = conn.execute(sa.select(machines.c.name).where(machines.c.id == owner)).scalar()
            raise ConflictError(f"MAC {mac} already belongs to machine {other!r}")
    if fields.name is not None:
        owner = conn.execute(
            sa.select(machines.c.id).where(machines.c.name == fields.name)
        ).scalar()
        if owner is not None and owner != machine_id:
            raise ConflictError(f"a machine named {fields.name!r} already exists")


def _set_macs(conn: sa.Connection, machine_id: int, macs: tuple[str, ...]) -> None:
    conn.execute(machine_macs.delete().where(machine_macs.c.machine_id == machine_id))
    conn.execute(
        machine_macs.insert(),
        [{"mac": mac, "machine_id": machine_id, "position": i} for i, mac in enumerate(macs)],
    )


def thd_create(
    conn: sa.Connection, fields: MachineFields, actor: str, disk: images_db.VersionFile
) -> Machine:
    """A new machine; *disk* (a formatted disk already in place as version 0
    of the image it names) becomes its machine image."""
    assert fields.macs, "a machine needs at least one MAC"
    _check_lease_end(conn, fields, None)
    name = fields.name or fields.macs[0]
    fields = dataclasses.replace(fields, name=name)
    _check_free(conn, fields, None)
    now = utcnow()
    image_uuid = disk.image_uuid
    # Every machine gets a private image the management OS keeps state on.
    conn.execute(
        images.insert().values(
            uuid=image_uuid,
            name=f"machine-{name}",
            owner_id=None,
            type="machine",
            filesystem="ext4",
            size=MACHINE_IMAGE_SIZE,
            created_at=now,
        )
    )
    images_db.insert_version(conn, disk, "created")
    machine_id = conn.execute(
        machines.insert().values(
            name=name,
            architecture=fields.architecture or "x86_64",
            managed=True if fields.managed is None else fields.managed,
            erase=fields.erase or "metadata",
            lease_end=fields.lease_end or "poweroff",
            lease_setup_uuid=fields.lease_setup_uuid or None,
            state="new",
            image_uuid=image_uuid,
            created_at=now,
        )
    ).inserted_primary_key[0]
    _set_macs(conn, machine_id, fields.macs)
    events.thd_record(
        conn,
        actor,
        "machine.create",
        "machine",
        str(machine_id),
        f"name={name} macs={','.join(fields.macs)}",
    )
    if fields.power is not None:
        power_db.thd_set(conn, machine_id, fields.power, actor, fields.power_keep_password)
    return _load(conn, machines.c.id == machine_id)[0]


def _check_lease_end(conn: sa.Connection, fields: MachineFields, current: Machine | None) -> None:
    """A setup named exists, and a machine re-imaged at a lease's end has one."""
    if fields.lease_setup_uuid:
        found = conn.execute(
            sa.select(image_setups.c.uuid).where(image_setups.c.uuid == fields.lease_setup_uuid)
        ).scalar()
        if found is None:
            raise InvalidError(f"LeaseSetupUUID: no image setup {fields.lease_setup_uuid}")
    end = fields.lease_end or (current.lease_end if current else "poweroff")
    setup = (
        fields.lease_setup_uuid
        if fields.lease_setup_uuid is not None
        else (current.lease_setup_uuid if current else None)
    )
    if end == "reimage" and not setup:
        raise InvalidError("LeaseEnd: reimage needs LeaseSetupUUID, the setup it queues")


def _update(conn: sa.Connection, machine_id: int, fields: MachineFields, actor: str) -> Machine:
    _check_free(conn, fields, machine_id)
    _check_lease_end(conn, fields, thd_by_id(conn, machine_id))
    values = {
        k: v
        for k, v in (
            ("name", fields.name),
            ("architecture", fields.architecture),
            ("managed", fields.managed),
            ("erase", fields.erase),
            ("lease_end", fields.lease_end),
            ("lease_setup_uuid", fields.lease_setup_uuid),
        )
        if v is not None
    }
    if values.get("lease_setup_uuid") == "":
        values["lease_setup_uuid"] = None
    if values:
        conn.execute(machines.update().where(machines.c.id == machine_id).values(**values))
    if fields.macs is not None:
        _set_macs(conn, machine_id, fields.macs)
    changed = " ".join(f"{k}={v}" for k, v in values.items())
    if fields.macs is not None:
        changed += f" macs={','.join(fields.macs)}"
    events.thd_record(conn, actor, "machine.update", "machine", str(machine_id), changed.strip())
    if fields.power is not None:
        power_db.thd_set(conn, machine_id, fields.power, actor, fields.power_keep_password)
    return _load(conn, machines.c.id == machine_id)[0]


def thd_update(conn: sa.Connection, mac: str, fields: MachineFields, actor: str) -> Machine:
    machine_id = _id_for_mac(conn, mac)
    if machine_id is None:
        raise NotFoundError(f"no machine with MAC {mac}")
    return _update(conn, machine_id, fields, actor)


def thd_upsert(
    conn: sa.Connection, fields: MachineFields, actor: str, disk: images_db.VersionFile
) -> tuple[Machine, bool]:
    """The original's UpdateMachine: update the machine owning the given MACs,
    or create it.  MACs spread over two machines are a conflict."""
    assert fields.macs
    owners = {_id_for_mac(conn, mac) for mac in fields.macs} - {None}
    if len(owners) > 1:
        raise ConflictError("the MAC addresses belong to more than one machine")
    if owners:
        return _update(conn, owners.pop(), fields, actor), False
    return thd_create(conn, fields, actor, disk), True


def thd_get_or_404(conn: sa.Connection, mac: str) -> Machine:
    machine = thd_get(conn, mac)
    if machine is None:
        raise NotFoundError(f"no machine with MAC {mac}")
    return machine


def thd_delete(conn: sa.Connection, mac: str, actor: str) -> Machine:
    machine = thd_get(conn, mac)
    if machine is None:
        raise NotFoundError(f"no machine with MAC {mac}")
    conn.execute(machines.delete().where(machines.c.id == machine.id))
    conn.execute(images.delete().where(images.c.uuid == machine.image_uuid))
    events.thd_record(
        conn, actor, "machine.delete", "machine", str(machine.id), f"name={machine.name}"
    )
    return machine


def thd_touch(conn: sa.Connection, machine_id: int, state: str | None = None) -> None:
    values: dict[str, object] = {"last_seen": utcnow()}
    if state is not None:
        values["state"] = state
    conn.execute(machines.update().where(machines.c.id == machine_id).values(**values))
