"""The boot queue: work queued for machines, taken by the management OS
(BootInform), completed, plus the machines' log lines."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa

from pxed import erase
from pxed.agent.wire import ERASE_ORIGIN, DiskHints
from pxed.db import credentials, events, images, setups, users
from pxed.db import machines as machines_db
from pxed.db.errors import ConflictError, InvalidError, NotFoundError
from pxed.db.images import Image
from pxed.db.schema import boot_setup_images, boot_setups, machine_logs, machines, utcnow
from pxed.db.setups import Setup

# The longest detail an erase step's event keeps of its log line.
EVENT_DETAIL = 1000

QUEUED, IN_PROGRESS, DONE, FAILED, CANCELLED = (
    "queued",
    "in-progress",
    "done",
    "failed",
    "cancelled",
)


@dataclass(frozen=True)
class WorkImage:
    image_uuid: str
    version: int
    update: bool
    hints: DiskHints | None = None


@dataclass(frozen=True)
class Work:
    id: int
    machine_id: int
    setup_uuid: str | None
    setup_name: str
    owner: str
    update: bool
    state: str
    message: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    images: tuple[WorkImage, ...]
    # What pxed does with the power once the work is complete: reboot (to
    # disk), poweroff or none.
    after: str = "none"
    # The cloud-init seed: as queued (None: as the images say), and whether
    # user-data came with it (the user-data itself: thd_user_data).
    seed: bool | None = None
    has_user_data: bool = False
    # The erase asked for when queued (None: the machine's policy), and
    # what was decided when the work was taken (pxed.erase): the erase
    # (None until taken), why, and whether the disks held another user's.
    erase_asked: str | None = None
    erase: str | None = None
    erase_reason: str = ""
    new_user: bool = False
    # Loaded with the entry (same transaction) for the original's BootSetup
    # encoding: the machine, and each image by UUID.
    machine: machines_db.Machine | None = None
    models: Mapping[str, Image] = field(default_factory=dict)


@dataclass(frozen=True)
class LogLine:
    id: int
    at: dt.datetime
    level: str
    origin: str
    message: str


def _load(conn: sa.Connection, where: sa.ColumnElement[bool]) -> list[Work]:
    columns = (
        *(c for c in boot_setups.c if c.name not in ("owner_id", "user_data")),
        users.owner_name(boot_setups.c.owner_id).label("owner"),
        boot_setups.c.user_data.is_not(None).label("has_user_data"),
    )
    rows = conn.execute(sa.select(*columns).where(where).order_by(boot_setups.c.id)).all()
    found: dict[int, list[WorkImage]] = {r.id: [] for r in rows}
    if rows:
        for i in conn.execute(
            sa.select(boot_setup_images)
            .where(boot_setup_images.c.boot_setup_id.in_(list(found)))
            .order_by(boot_setup_images.c.position)
        ):
            found[i.boot_setup_id].append(
                WorkImage(i.image_uuid, i.version, i.update, setups.hints_of(i.disk_hints))
            )
    models = images.load_by_uuid(conn, (i.image_uuid for its in found.values() for i in its))
    by_id = machines_db.load_by_id(conn, (r.machine_id for r in rows))
    return [
        Work(
            **r._mapping,
            images=tuple(found[r.id]),
            machine=by_id.get(r.machine_id),
            models=models,
        )
        for r in rows
    ]


def _one(conn: sa.Connection, where: sa.ColumnElement[bool]) -> Work | None:
    found = _load(conn, where)
    return found[0] if found else None


def thd_enqueue(
    conn: sa.Connection,
    machine_id: int,
    setup: Setup,
    update: bool,
    owner: str,
    actor: str,
    after: str = "none",
    seed: bool | None = None,
    user_data: str | None = None,
    erase_asked: str | None = None,
) -> Work:
    if not setup.entries:
        raise InvalidError("SetupUUID: the setup has no images")
    work_id = conn.execute(
        boot_setups.insert().values(
            machine_id=machine_id,
            setup_uuid=setup.uuid,
            setup_name=setup.name,
            owner_id=users.thd_id(conn, owner),
            update=update,
            state=QUEUED,
            created_at=utcnow(),
            after=after,
            seed=seed,
            user_data=user_data,
            erase_asked=erase_asked,
        )
    ).inserted_primary_key[0]
    conn.execute(
        boot_setup_images.insert(),
        [
            {
                "boot_setup_id": work_id,
                "image_uuid": e.image_uuid,
                "version": e.version,
                # The queue's Update switches capturing off for the whole run.
                "update": e.update and update,
                "position": i,
                "disk_hints": setups.hints_column(e.hints),
            }
            for i, e in enumerate(setup.entries)
        ],
    )
    events.thd_record(
        conn,
        actor,
        "queue.add",
        "machine",
        str(machine_id),
        f"work={work_id} setup={setup.uuid} update={update} after={after}"
        + (f" erase={erase_asked}" if erase_asked else ""),
    )
    work = _one(conn, boot_setups.c.id == work_id)
    assert work is not None
    return work


def thd_enqueue_erase(
    conn: sa.Connection, machine_id: int, owner: str, actor: str, policy: str, after: str
) -> Work:
    """Work that writes nothing: the management OS erases every disk by
    *policy* and is done (on demand: a machine handed back, retired)."""
    work_id = conn.execute(
        boot_setups.insert().values(
            machine_id=machine_id,
            setup_uuid=None,
            setup_name=f"erase ({policy})",
            owner_id=users.thd_id(conn, owner),
            update=False,
            state=QUEUED,
            created_at=utcnow(),
            after=after,
            seed=False,
            erase_asked=policy,
        )
    ).inserted_primary_key[0]
    events.thd_record(
        conn, actor, "queue.add", "machine", str(machine_id), f"work={work_id} erase={policy}"
    )
    work = _one(conn, boot_setups.c.id == work_id)
    assert work is not None
    return work


def thd_list(conn: sa.Connection, machine_id: int, owner: str | None = None) -> list[Work]:
    """Queued and in-progress work, oldest first (of *owner* only, if given)."""
    where = sa.and_(
        boot_setups.c.machine_id == machine_id, boot_setups.c.state.in_((QUEUED, IN_PROGRESS))
    )
    if owner is not None:
        where = sa.and_(where, boot_setups.c.owner_id == users.id_of(conn, owner))
    return _load(conn, where)


@dataclass(frozen=True)
class CurrentWork:
    """What a boot answer needs of a machine's current work."""

    id: int
    machine_id: int
    state: str
    image_uuids: tuple[str, ...]


def thd_current_all(
    conn: sa.Connection, machine_ids: Collection[int] | None = None
) -> dict[int, CurrentWork]:
    """Every machine's current work (as ``thd_current``), by machine id, in
    two queries: the boot answers' view of a whole site (or of the
    machines of *machine_ids*)."""
    current: dict[int, tuple[int, str]] = {}
    q = sa.select(boot_setups.c.id, boot_setups.c.machine_id, boot_setups.c.state).where(
        boot_setups.c.state.in_((QUEUED, IN_PROGRESS))
    )
    if machine_ids is not None:
        q = q.where(boot_setups.c.machine_id.in_(sorted(machine_ids)))
    rows = conn.execute(q.order_by(boot_setups.c.id))
    for work_id, machine_id, state in rows:
        held = current.get(machine_id)
        # The oldest queued entry stays unless one is in progress.
        if held is None or (state == IN_PROGRESS and held[1] != IN_PROGRESS):
            current[machine_id] = (work_id, state)
    images: dict[int, list[str]] = {work_id: [] for work_id, _ in current.values()}
    if images:
        for work_id, uuid in conn.execute(
            sa.select(boot_setup_images.c.boot_setup_id, boot_setup_images.c.image_uuid)
            .where(boot_setup_images.c.boot_setup_id.in_(list(images)))
            .order_by(boot_setup_images.c.position)
        ):
            images[work_id].append(uuid)
    return {
        machine_id: CurrentWork(work_id, machine_id, state, tuple(images[work_id]))
        for machine_id, (work_id, state) in current.items()
    }


def thd_get(conn: sa.Connection, machine_id: int, work_id: int) -> Work | None:
    return _one(conn, sa.and_(boot_setups.c.id == work_id, boot_setups.c.machine_id == machine_id))


def thd_cancel(conn: sa.Connection, machine_id: int, work_id: int, actor: str) -> Work:
    cancelled = conn.execute(
        boot_setups.update()
        .where(
            boot_setups.c.id == work_id,
            boot_setups.c.machine_id == machine_id,
            boot_setups.c.state == QUEUED,
        )
        .values(state=CANCELLED, finished_at=utcnow(), message=f"cancelled by {actor}")
    ).rowcount
    work = thd_get(conn, machine_id, work_id)
    if work is None:
        raise NotFoundError(f"no queue entry {work_id} for this machine")
    if not cancelled:
        raise ConflictError(
            f"queue entry {work_id} is {work.state}; only queued work can be cancelled"
        )
    # Its credential (a boot answer may have handed it out) ends with it.
    credentials.thd_revoke_work(conn, work_id)
    events.thd_record(conn, actor, "queue.cancel", "machine", str(machine_id), f"work={work_id}")
    return work


def thd_current(conn: sa.Connection, machine_id: int) -> Work | None:
    """The work a netboot now would do: the in-progress entry, else the
    oldest queued one."""
    for state in (IN_PROGRESS, QUEUED):
        work = _one_first(conn, machine_id, state)
        if work is not None:
            return work
    return None


def _one_first(conn: sa.Connection, machine_id: int, state: str) -> Work | None:
    first = conn.execute(
        sa.select(sa.func.min(boot_setups.c.id)).where(
            boot_setups.c.machine_id == machine_id, boot_setups.c.state == state
        )
    ).scalar()
    return None if first is None else _one(conn, boot_setups.c.id == first)


def thd_take(conn: sa.Connection, machine_id: int, actor: str) -> Work | None:
    """BootInform: the in-progress entry if there is one (the management OS
    may have restarted), else the oldest queued entry, now in progress."""
    # Lock the machine row: two concurrent calls (PostgreSQL; from one
    # server or several) serialise here, so they never take two entries,
    # nor the same one twice; the second finds the first's entry in
    # progress and answers it again.  Not SKIP LOCKED: that would hand the
    # second call the machine's next queued entry, two in progress at once
    # (the build queue, whose servers compete for any build, skips instead).
    conn.execute(sa.select(machines.c.id).where(machines.c.id == machine_id).with_for_update())
    running = _one_first(conn, machine_id, IN_PROGRESS)
    if running is not None:
        # The management OS restarted and asked again: it was seen now.
        conn.execute(
            machines.update().where(machines.c.id == machine_id).values(last_seen=utcnow())
        )
        return running
    queued = _one_first(conn, machine_id, QUEUED)
    if queued is None:
        return None
    policy, last_user_id = conn.execute(
        sa.select(machines.c.erase, machines.c.last_user_id).where(machines.c.id == machine_id)
    ).one()
    owner_id = conn.execute(
        sa.select(boot_setups.c.owner_id).where(boot_setups.c.id == queued.id)
    ).scalar()
    worked = conn.execute(
        sa.select(boot_setups.c.id)
        .where(boot_setups.c.machine_id == machine_id, boot_setups.c.state.in_((DONE, FAILED)))
        .limit(1)
    ).first()
    plan = erase.decide(policy, queued.erase_asked, owner_id, last_user_id, worked is not None)
    taken = conn.execute(
        boot_setups.update()
        .where(boot_setups.c.id == queued.id, boot_setups.c.state == QUEUED)
        .values(
            state=IN_PROGRESS,
            started_at=utcnow(),
            erase=plan.erase,
            erase_reason=plan.reason,
            new_user=plan.new_user,
        )
    ).rowcount
    if not taken:
        return None
    conn.execute(
        machines.update()
        .where(machines.c.id == machine_id)
        .values(state="provisioning", last_seen=utcnow())
    )
    events.thd_record(conn, actor, "queue.start", "machine", str(machine_id), f"work={queued.id}")
    if plan.erase != "none":
        events.thd_record(
            conn,
            actor,
            "machine.erase",
            "machine",
            str(machine_id),
            f"work={queued.id} erase={plan.erase}: {plan.reason}",
        )
    return _one(conn, boot_setups.c.id == queued.id)


def thd_complete(
    conn: sa.Connection, machine_id: int, success: bool, message: str, actor: str
) -> Work:
    running = _one_first(conn, machine_id, IN_PROGRESS)
    if running is None:
        raise ConflictError("the machine has no work in progress")
    now = utcnow()
    state = DONE if success else FAILED
    conn.execute(
        boot_setups.update()
        .where(boot_setups.c.id == running.id)
        .values(state=state, message=message, finished_at=now)
    )
    values: dict[str, object] = {"state": "deployed" if success else "failed", "last_seen": now}
    if success:
        values["last_user_id"] = conn.execute(
            sa.select(boot_setups.c.owner_id).where(boot_setups.c.id == running.id)
        ).scalar()
    else:
        last = conn.execute(
            sa.select(machines.c.last_user_id).where(machines.c.id == machine_id)
        ).scalar()
        owner = conn.execute(
            sa.select(boot_setups.c.owner_id).where(boot_setups.c.id == running.id)
        ).scalar()
        if last != owner:
            # Another user's work stopped part way: whose data the disks
            # hold now is nobody's to say, so the next work erases.
            values["last_user_id"] = None
    conn.execute(machines.update().where(machines.c.id == machine_id).values(**values))
    # The setup ended: its credentials go with it.
    credentials.thd_revoke_all(conn, machine_id)
    events.thd_record(
        conn,
        actor,
        f"queue.{state}",
        "machine",
        str(machine_id),
        f"work={running.id} {message}".strip(),
    )
    work = _one(conn, boot_setups.c.id == running.id)
    assert work is not None
    return work


def thd_capturable(conn: sa.Connection, machine_id: int) -> set[str]:
    """Images the machine may upload now: those flagged Update in its
    in-progress work, and its own machine image."""
    running = _one_first(conn, machine_id, IN_PROGRESS)
    if running is None:
        return set()
    own = conn.execute(sa.select(machines.c.image_uuid).where(machines.c.id == machine_id)).scalar()
    if running.new_user:
        # The disks may hold another user's data: none of it goes into an image.
        return {own}
    return {i.image_uuid for i in running.images if i.update} | {own}


# -- log lines from the management OS ----------------------------------------


def thd_add_log(
    conn: sa.Connection, machine_id: int, level: str, origin: str, message: str, actor: str = ""
) -> None:
    conn.execute(
        machine_logs.insert().values(
            machine_id=machine_id, at=utcnow(), level=level, origin=origin, message=message
        )
    )
    if origin == ERASE_ORIGIN:
        # An erase's steps (the agent's Reporter.step) are events as well:
        # which disks were wiped for whom outlives the machine's log.
        events.thd_record(
            conn, actor, "machine.erase.step", "machine", str(machine_id), message[:EVENT_DETAIL],
        )  # fmt: skip
    conn.execute(machines.update().where(machines.c.id == machine_id).values(last_seen=utcnow()))


def thd_logs(conn: sa.Connection, machine_id: int, limit: int = 1000) -> list[LogLine]:
    rows = conn.execute(
        sa.select(
            machine_logs.c.id,
            machine_logs.c.at,
            machine_logs.c.level,
            machine_logs.c.origin,
            machine_logs.c.message,
        )
        .where(machine_logs.c.machine_id == machine_id)
        .order_by(machine_logs.c.id.desc())
        .limit(limit)
    )
    return [LogLine(**r._mapping) for r in reversed(rows.all())]


def thd_work_images(
    conn: sa.Connection, work: Work, machine_image: str
) -> tuple[list[Image], Image]:
    """The images of *work*, in its order, and the machine's own image."""
    return (
        [images.get_or_404(conn, i.image_uuid) for i in work.images],
        images.get_or_404(conn, machine_image),
    )


def thd_enqueue_image(
    conn: sa.Connection,
    machine_id: int,
    owner: str,
    name: str,
    entry: setups.Wanted,
    staff: bool,
    actor: str,
    after: str = "none",
    seed: bool | None = None,
    user_data: str | None = None,
    erase_asked: str | None = None,
) -> Work:
    """The seed's one-image form: a setup of that image and its queue
    entry, in one transaction."""
    setup = setups.thd_create(conn, owner, name, [entry], staff, actor)
    return thd_enqueue(
        conn, machine_id, setup, entry.update, owner, actor, after, seed, user_data, erase_asked
    )


def thd_user_data(conn: sa.Connection, work_id: int) -> str | None:
    return conn.execute(
        sa.select(boot_setups.c.user_data).where(boot_setups.c.id == work_id)
    ).scalar()


def thd_has_live_work(conn: sa.Connection, machine_id: int, owner: str) -> bool:
    """Whether *owner* has queued or in-progress work on the machine."""
    return (
        conn.execute(
            sa.select(boot_setups.c.id)
            .where(
                boot_setups.c.machine_id == machine_id,
                boot_setups.c.state.in_((QUEUED, IN_PROGRESS)),
                boot_setups.c.owner_id == users.id_of(conn, owner),
            )
            .limit(1)
        ).first()
        is not None
    )
