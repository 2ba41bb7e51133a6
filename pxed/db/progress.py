"""Deploy progress: bytes written of bytes expected for each image of the
work in progress, as the management OS reports them, and what a machine's
answer says of its current work (step, percentage).

An image's first report starts its clock; the report that reaches its
total records the "image written" event with the time and throughput.
The rows live in their own table, not one the boot view loads: a report
every few seconds reloads nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from pxed.db import events
from pxed.db.errors import ConflictError, InvalidError
from pxed.db.queue import IN_PROGRESS, QUEUED
from pxed.db.schema import (
    boot_setup_images,
    boot_setups,
    image_versions,
    images,
    utcnow,
    work_progress,
)
from pxed.db.schema import events as event_rows


@dataclass(frozen=True)
class Progress:
    """Where a machine's current work is."""

    work_id: int
    state: str
    step: str
    # Bytes written of bytes expected over all the work's images.
    written: int
    total: int
    images: int
    images_written: int
    # The image reported last, and its own figures.
    image: str | None = None
    image_written: int = 0
    image_total: int = 0
    updated_at: dt.datetime | None = None

    @property
    def percent(self) -> int:
        if self.total <= 0:
            return 100 if self.images and self.images_written == self.images else 0
        return min(100, self.written * 100 // self.total)


def rate(size: int, seconds: float) -> str:
    return f"{size / max(seconds, 0.001) / 1e6:.1f} MB/s"


def thd_report(
    conn: sa.Connection,
    machine_id: int,
    image_uuid: str,
    written: int,
    total: int,
    actor: str,
) -> Progress:
    """Record that *written* of *total* bytes of *image_uuid* are written
    on the machine's work in progress."""
    work = conn.execute(
        sa.select(boot_setups.c.id).where(
            boot_setups.c.machine_id == machine_id, boot_setups.c.state == IN_PROGRESS
        )
    ).scalar()
    if work is None:
        raise ConflictError("the machine has no work in progress")
    bsi = boot_setup_images.c
    version = conn.execute(
        sa.select(bsi.version).where(bsi.boot_setup_id == work, bsi.image_uuid == image_uuid)
    ).scalar()
    if version is None:
        raise InvalidError("Image: not an image of the work in progress")
    now = utcnow()
    wp = work_progress.c
    key = sa.and_(wp.work_id == work, wp.image_uuid == image_uuid)
    row = conn.execute(sa.select(work_progress).where(key)).first()
    if row is None:
        conn.execute(
            work_progress.insert().values(
                work_id=work,
                image_uuid=image_uuid,
                written=written,
                total=total,
                started_at=now,
                updated_at=now,
            )
        )
        started, done = now, None
    else:
        started, done = row.started_at, row.done_at
        if done is not None and written < row.written:
            # A report sent before the last one and come after it: an
            # image written stays written.
            written = row.written
        conn.execute(
            work_progress.update().where(key).values(written=written, total=total, updated_at=now)
        )
    if written >= total and done is None:
        conn.execute(work_progress.update().where(key).values(done_at=now))
        seconds = (now - started).total_seconds()
        name = conn.execute(sa.select(images.c.name).where(images.c.uuid == image_uuid)).scalar()
        events.thd_record(
            conn,
            actor,
            "work.image-written",
            "machine",
            str(machine_id),
            f"work={work} image={image_uuid} ({name}) v{version}: {total} bytes "
            f"in {seconds:.1f} s ({rate(total, seconds)})",
        )
    return thd_for_machines(conn, [machine_id])[machine_id]


def thd_for_machines(
    conn: sa.Connection, machine_ids: Iterable[int] | None = None
) -> dict[int, Progress]:
    """machine id -> the progress of its current work (the in-progress
    entry, else the oldest queued one), for the machines that have work;
    of *machine_ids* only, if given."""
    bs = boot_setups.c
    q = sa.select(bs.id, bs.machine_id, bs.state).where(bs.state.in_((QUEUED, IN_PROGRESS)))
    if machine_ids is not None:
        q = q.where(bs.machine_id.in_(list(machine_ids)))
    current: dict[int, tuple[int, str]] = {}
    for row in conn.execute(q.order_by(bs.id)):
        held = current.get(row.machine_id)
        if held is None or (row.state == IN_PROGRESS and held[1] != IN_PROGRESS):
            current[row.machine_id] = (row.id, row.state)
    if not current:
        return {}
    work_ids = [w for w, _ in current.values()]
    # Bytes expected: each image's stored size at its version.
    bsi = boot_setup_images.c
    expected: dict[int, dict[str, int]] = {w: {} for w in work_ids}
    for row in conn.execute(
        sa.select(bsi.boot_setup_id, bsi.image_uuid, image_versions.c.size)
        .select_from(
            boot_setup_images.outerjoin(
                image_versions,
                sa.and_(
                    image_versions.c.image_uuid == bsi.image_uuid,
                    image_versions.c.version == bsi.version,
                ),
            )
        )
        .where(bsi.boot_setup_id.in_(work_ids))
        .order_by(bsi.position)
    ):
        expected[row.boot_setup_id][row.image_uuid] = row.size or 0
    reports: dict[int, list[sa.Row]] = {w: [] for w in work_ids}
    for row in conn.execute(
        sa.select(work_progress)
        .where(work_progress.c.work_id.in_(work_ids))
        .order_by(work_progress.c.updated_at)
    ):
        reports[row.work_id].append(row)
    # Served to a netboot: the work's credential is minted ahead, the
    # first answer that hands it out records work.netboot (pxed.boot.answerlog).
    served = {f"work={w}": w for w in work_ids}
    netbooted = {
        served[detail]
        for detail in conn.execute(
            sa.select(event_rows.c.detail).where(
                event_rows.c.target_type == "machine",
                event_rows.c.target.in_([str(m) for m in current]),
                event_rows.c.action == "work.netboot",
                event_rows.c.detail.in_(list(served)),
            )
        ).scalars()
    }
    return {
        machine_id: _progress(work, state, expected[work], reports[work], work in netbooted)
        for machine_id, (work, state) in current.items()
    }


def _progress(
    work: int, state: str, expected: dict[str, int], reports: list, netbooted: bool
) -> Progress:
    sizes = dict(expected)
    written = {}
    for r in reports:
        sizes[r.image_uuid] = r.total
        written[r.image_uuid] = min(r.written, r.total)
    done = sum(1 for r in reports if r.done_at is not None)
    base = dict(
        work_id=work,
        state=state,
        written=sum(written.values()),
        total=sum(sizes.values()),
        images=len(expected),
        images_written=done,
    )
    if state == QUEUED:
        step = "netbooted: waiting for the management OS" if netbooted else "queued"
        return Progress(step=step, **base)
    if not reports:
        return Progress(step="started", **base)
    last = reports[-1]
    if done == len(expected):
        step = "finishing"
    else:
        order = list(expected)
        index = order.index(last.image_uuid) + 1 if last.image_uuid in order else done + 1
        doing = "wrote" if last.done_at is not None else "writing"
        step = f"{doing} image {index} of {len(expected)}"
    return Progress(
        step=step,
        image=last.image_uuid,
        image_written=last.written,
        image_total=last.total,
        updated_at=last.updated_at,
        **base,
    )
