"""The management OS protocol: BootInform, completion and log lines, plus
reading a machine's logs and events back."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

from twisted.web.iweb import IRequest

from pxed import seed
from pxed.boot import networks
from pxed.boot.credentials import Credentials
from pxed.db import events, progress, queue, sshkeys
from pxed.db.images import Image
from pxed.db.machines import Machine
from pxed.db.pool import DBPool
from pxed.db.schema import utcnow
from pxed.db.users import id_of
from pxed.errors import BadRequest, Forbidden, NotFound
from pxed.power.service import PowerService
from pxed.web import render
from pxed.web.auth import actor, identity
from pxed.web.body import INT_MAX, parse_time, query_arg, read_json
from pxed.web.leasehold import check_lease
from pxed.web.lookup import machine_or_404
from pxed.web.origin import Origin
from pxed.web.router import route
from pxed.workers import IOPool

# Every level logrus has (the original's log hook sends Level.String()) and
# pxed's own, to the level stored.
LEVEL_NAMES = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "fatal": "critical",
    "panic": "critical",
    "critical": "critical",
}


def log_level(name: str | None) -> str:
    """The stored level for a log line's Level (case-insensitive; none is info)."""
    level = LEVEL_NAMES.get((name or "info").lower())
    if level is None:
        raise BadRequest(f"Level: one of {', '.join(LEVEL_NAMES)}")
    return level


class AgentResource:
    def __init__(
        self,
        db: DBPool,
        origin: Origin,
        power: PowerService,
        credentials: Credentials,
        io: IOPool,
        scratch: Path,
    ) -> None:
        self._db = db
        self._origin = origin
        self._power = power
        self._credentials = credentials
        self._io = io
        # Where seeds are made (pxed's staging dir: the user-data is in them).
        self._scratch = scratch

    async def _boot_inform_answer(
        self, request: IRequest, machine: Machine, mac: str, work: queue.Work
    ) -> dict:
        """The original's ``images.ImageSetup`` {Name, Images, Username, UUID}
        whose Images are ``ImageFrozen`` entries: the work's images, then the
        machine image (Type "machine", no Disk), as the original listed it.
        Beside them pxed's fields: per entry where to download and upload,
        size, sha256, compression and the disk it goes to; at the top the
        work (ID, State, ...), the Machine and the MachineImage."""
        base = self._origin.base_url(request)
        work_images, own = await self._db.run(queue.thd_work_images, work, machine.image_uuid)
        # Disks that may hold another user's data are never captured.
        entries = [
            _entry(base, mac, image, replace(e, update=e.update and not work.new_user), disk)
            for disk, (e, image) in enumerate(zip(work.images, work_images, strict=True))
        ]
        # The machine image goes back after every run: Update.
        latest = own.latest.version if own.latest else 0
        entries.append(_entry(base, mac, own, queue.WorkImage(own.uuid, latest, True), None))
        # The queue entry's own fields, less what would repeat or contradict
        # the ImageSetup: its nested Setup and its one-image ImageUUID/Version.
        skip = ("Setup", "ImageUUID", "Version")
        pxed = {k: v for k, v in render.work(work, mac).items() if k not in skip}
        return {
            **pxed,
            "Update": work.update and not work.new_user,
            # images.ImageSetup
            "Name": work.setup_name,
            "Images": entries,
            "Username": work.owner,
            "UUID": work.setup_uuid or "",
            "MachineImage": _machine_image(base, mac, own),
            "Machine": render.machine(machine),
            "Seed": {"URL": f"{base}/machine/{mac}/seed"} if _wants_seed(work) else None,
            "Erase": (
                {"Policy": work.erase, "Reason": work.erase_reason}
                if work.erase not in (None, "none")
                else None
            ),
        }

    @route("/machine/<mac>/boot", ["GET"], access="machine")
    async def boot_inform(self, request: IRequest, mac: str) -> dict:
        machine = await machine_or_404(self._db, mac)
        cred = identity(request).machine
        if cred is not None:
            # The first BootInform binds the credential to its caller's
            # address; from then on no other client may use it.
            address = networks.client_address(request) or ""
            if not await self._credentials.bind(cred, address, actor(request)):
                raise Forbidden("this machine credential is bound to another client")
        work = await self._db.run(queue.thd_take, machine.id, actor(request))
        if work is None:
            raise NotFound("no queued work for this machine")
        # Taking the work changed the machine (state, last seen): show it now.
        machine = await machine_or_404(self._db, mac)
        return await self._boot_inform_answer(request, machine, machine.macs[0], work)

    @route("/machine/<mac>/seed", ["GET"], access="machine")
    async def get_seed(self, request: IRequest, mac: str) -> bytes:
        """The cloud-init NoCloud seed of the work in progress (pxed.seed):
        a FAT image the management OS writes at the end of the boot disk."""
        machine = await machine_or_404(self._db, mac)
        work = await self._db.run(queue.thd_current, machine.id)
        if work is None or work.state != queue.IN_PROGRESS or not _wants_seed(work):
            raise NotFound("no work in progress with a cloud-init seed for this machine")
        cred = identity(request).machine
        if cred is not None and cred.work_id not in (None, work.id):
            raise Forbidden("this machine credential is for another work")
        keys, user_data = await self._db.run(_seed_inputs, work)
        contents = seed.files(
            work_id=work.id,
            machine_name=machine.name,
            mac=machine.macs[0],
            keys=keys,
            user_data=user_data,
        )
        image = await self._io.run(seed.build, self._scratch, contents)
        detail = f"work={work.id} keys={len(keys)} user-data={'yes' if user_data else 'no'}"
        await self._db.run(
            events.thd_record, actor(request), "seed.sent", "machine", str(machine.id), detail
        )
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", b"%d" % len(image))
        return image

    @route("/machine/<mac>/boot/complete", ["POST"], access="machine")
    async def boot_complete(self, request: IRequest, mac: str) -> dict:
        body = read_json(request)
        success = body.bool("Success", required=True)
        message = body.str("Message", max_length=4000) or ""
        machine = await machine_or_404(self._db, mac)
        work = await self._db.run(queue.thd_complete, machine.id, success, message, actor(request))
        # Reboot to the disk or power off, as the work says: in the
        # background, so the management OS hears back at once.
        self._power.after_work(machine, work.after, work.id)
        return render.work(work, machine.macs[0])

    @route("/machine/<mac>/progress", ["POST"], access="machine")
    async def post_progress(self, request: IRequest, mac: str) -> dict:
        """Bytes written of an image of the work in progress (the management
        OS, every few seconds while it writes); the answer is the machine's
        Progress."""
        body = read_json(request)
        image = body.str("Image", required=True, max_length=36)
        written = body.int("Written", required=True)
        total = body.int("Total", required=True)
        assert image is not None and written is not None and total is not None
        if not 0 <= total <= INT_MAX or not 0 <= written <= total:
            raise BadRequest("Written and Total: 0 <= Written <= Total")
        machine = await machine_or_404(self._db, mac)
        cred = identity(request).machine
        if cred is not None and image not in cred.image_uuids:
            raise Forbidden("this machine credential does not cover that image")
        found = await self._db.run(
            progress.thd_report, machine.id, image, written, total, actor(request)
        )
        return render.progress(found)

    @route("/log", ["POST"], access="machine")
    async def post_log(self, request: IRequest) -> str:
        body = read_json(request)
        cred = identity(request).machine
        if cred is None:
            raise BadRequest(
                "POST /log takes log lines from the management OS (a machine credential)"
            )
        level = log_level(body.str("Level", max_length=16))
        message = body.str("Message", required=True, max_length=16000)
        origin = body.str("Origin", max_length=64) or "mgmtos"
        await self._db.run(
            queue.thd_add_log, cred.machine_id, level, origin, message, actor(request)
        )
        return "OK"

    @route("/machine/<mac>/logs", ["GET"], access="signed-in")
    async def machine_logs(self, request: IRequest, mac: str) -> list:
        machine = await machine_or_404(self._db, mac)
        await check_lease(self._db, request, machine)
        return [render.log_line(line) for line in await self._db.run(queue.thd_logs, machine.id)]

    @route("/machine/<mac>/events", ["GET"], access="signed-in")
    async def machine_events(self, request: IRequest, mac: str) -> list:
        since = _since(request)
        machine = await machine_or_404(self._db, mac)
        found = await self._db.run(events.thd_list, "machine", str(machine.id), None, None, since)
        return [render.event(e) for e in found]


# How far back a machine's events go unless ?since= says otherwise.
EVENTS_VIEW = dt.timedelta(days=7)


def _since(request: IRequest) -> dt.datetime:
    """``?since=`` (ISO 8601; without a zone, UTC), else a week ago."""
    raw = query_arg(request, "since")
    return utcnow() - EVENTS_VIEW if not raw else parse_time(raw, "since")


def _wants_seed(work: queue.Work) -> bool:
    """As queued, else if any of the work's images boots with cloud-init."""
    if work.seed is not None:
        return work.seed
    return any(
        work.models[i.image_uuid].cloud_init for i in work.images if i.image_uuid in work.models
    )


def _seed_inputs(conn, work: queue.Work) -> tuple[list[str], str | None]:
    """The work's owner's SSH keys and its user-data (a thd function)."""
    owner = id_of(conn, work.owner) if work.owner else None
    keys = [] if owner is None else [k.line for k in sshkeys.thd_list_by_id(conn, owner)]
    return keys, queue.thd_user_data(conn, work.id)


def _entry(base: str, mac: str, image: Image, e: queue.WorkImage, disk: int | None) -> dict:
    """One BootInform entry: the original's ImageFrozen and, beside it,
    what pxed's management OS reads (Disk: the index of the machine's disk
    it is written to, null for the machine image, which is not written;
    DiskHints, when given, pick the disk instead)."""
    number = e.version
    found = image.version(number)
    return {
        **render.frozen(image, number, e.update, e.hints),
        "URL": f"{base}/image/{image.uuid}/{number}",
        "UploadURL": f"{base}/machine/{mac}/disk/{image.uuid}",
        "Size": found.size if found else None,
        "Sha256": found.sha256 if found else None,
        "DiskCompressionStrategy": image.compression,
        "Disk": disk,
    }


def _machine_image(base: str, mac: str, own: Image) -> dict:
    """pxed's flat description of the machine image (as before the
    ImageSetup shape; its entry in Images says the same)."""
    latest = own.latest
    return {
        "UUID": own.uuid,
        "Version": latest.version if latest else None,
        "Size": latest.size if latest else None,
        "Sha256": latest.sha256 if latest else None,
        "Filesystem": own.filesystem,
        "DiskCompressionStrategy": own.compression,
        "URL": f"{base}/machine/{mac}/image",
        "UploadURL": f"{base}/machine/{mac}/disk/{own.uuid}",
    }
