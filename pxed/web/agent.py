"""The management OS protocol: BootInform, completion and log lines, plus
reading a machine's logs and events back."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from pxed.db import events, queue
from pxed.db.machines import Machine
from pxed.db.pool import DBPool
from pxed.errors import BadRequest, NotFound
from pxed.web import render
from pxed.web.auth import actor, identity
from pxed.web.body import read_json
from pxed.web.lookup import machine_or_404
from pxed.web.origin import Origin
from pxed.web.router import route

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class AgentResource:
    def __init__(self, db: DBPool, origin: Origin) -> None:
        self._db = db
        self._origin = origin

    async def _boot_inform_answer(
        self, request: IRequest, machine: Machine, mac: str, work: queue.Work
    ) -> dict:
        base = self._origin.base_url(request)
        work_images, own = await self._db.run(queue.thd_work_images, work, machine.image_uuid)
        answer = render.work(work, mac)
        answer["Images"] = []
        for entry, image in zip(work.images, work_images, strict=True):
            version = image.version(entry.version)
            answer["Images"].append(
                {
                    "UUID": image.uuid,
                    "Name": image.name,
                    "Version": entry.version,
                    "Update": entry.update,
                    "Size": version.size if version else None,
                    "Sha256": version.sha256 if version else None,
                    "DiskUUID": image.disk_uuid,
                    "DiskCompressionStrategy": image.compression,
                    "ImageFileType": image.file_type,
                    "Filesystem": image.filesystem,
                    "URL": f"{base}/image/{image.uuid}/{entry.version}",
                    "UploadURL": f"{base}/machine/{mac}/disk/{image.uuid}",
                }
            )
        latest = own.latest
        answer["MachineImage"] = {
            "UUID": own.uuid,
            "Version": latest.version if latest else None,
            "Size": latest.size if latest else None,
            "Sha256": latest.sha256 if latest else None,
            "Filesystem": own.filesystem,
            "DiskCompressionStrategy": own.compression,
            "URL": f"{base}/machine/{mac}/image",
            "UploadURL": f"{base}/machine/{mac}/disk/{own.uuid}",
        }
        answer["Machine"] = render.machine(machine)
        return answer

    @route("/machine/<mac>/boot", ["GET"], access="machine")
    async def boot_inform(self, request: IRequest, mac: str) -> dict:
        machine = await machine_or_404(self._db, mac)
        work = await self._db.run(queue.thd_take, machine.id, actor(request))
        if work is None:
            raise NotFound("no queued work for this machine")
        # Taking the work changed the machine (state, last seen): show it now.
        machine = await machine_or_404(self._db, mac)
        return await self._boot_inform_answer(request, machine, machine.macs[0], work)

    @route("/machine/<mac>/boot/complete", ["POST"], access="machine")
    async def boot_complete(self, request: IRequest, mac: str) -> dict:
        body = read_json(request)
        success = body.bool("Success", required=True)
        message = body.str("Message", max_length=4000) or ""
        machine = await machine_or_404(self._db, mac)
        work = await self._db.run(queue.thd_complete, machine.id, success, message, actor(request))
        return render.work(work, machine.macs[0])

    @route("/log", ["POST"], access="machine")
    async def post_log(self, request: IRequest) -> str:
        body = read_json(request)
        cred = identity(request).machine
        if cred is None:
            raise BadRequest(
                "POST /log takes log lines from the management OS (a machine credential)"
            )
        level = (body.str("Level", max_length=16) or "info").lower()
        if level not in LOG_LEVELS:
            raise BadRequest(f"Level: one of {', '.join(LOG_LEVELS)}")
        message = body.str("Message", required=True, max_length=16000)
        origin = body.str("Origin", max_length=64) or "mgmtos"
        await self._db.run(queue.thd_add_log, cred.machine_id, level, origin, message)
        return "OK"

    @route("/machine/<mac>/logs", ["GET"], access="signed-in")
    async def machine_logs(self, request: IRequest, mac: str) -> list:
        machine = await machine_or_404(self._db, mac)
        return [render.log_line(line) for line in await self._db.run(queue.thd_logs, machine.id)]

    @route("/machine/<mac>/events", ["GET"], access="signed-in")
    async def machine_events(self, request: IRequest, mac: str) -> list:
        machine = await machine_or_404(self._db, mac)
        found = await self._db.run(events.thd_list, "machine", str(machine.id), 500)
        return [render.event(e) for e in found]
