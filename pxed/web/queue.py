"""The boot queue as users see it: /machine/{mac}/boot, …/boot/queue."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from pxed import erase
from pxed.boot.credentials import Credentials
from pxed.db import images, queue, setups
from pxed.db import power as power_db
from pxed.db.machines import Machine
from pxed.db.pool import DBPool
from pxed.db.written import concerning
from pxed.errors import BadRequest, Conflict, Forbidden, NotFound
from pxed.power.service import PowerService
from pxed.web import render
from pxed.web.auth import actor, check_owner, identity, user
from pxed.web.body import Fields, read_json
from pxed.web.leasehold import check_lease
from pxed.web.lookup import machine_or_404
from pxed.web.power import choice
from pxed.web.router import route


def _check_managed(machine: Machine) -> None:
    if not machine.managed:
        raise Conflict("the machine is not managed, so it will not netboot into pxed")


def setup_uuid_of(body: Fields) -> str | None:
    """``SetupUUID``, or the ``Setup.UUID`` of a body in the original's
    BootSetup encoding; "" is unset (Go's zero value)."""
    found = body.str("SetupUUID", max_length=36)
    if not found and isinstance(body.raw("Setup"), dict):
        found = body.object("Setup").str("UUID", max_length=36)
    return found or None


# cloud-init's own sources (EC2, OpenStack) allow 16-64 KiB of user-data.
MAX_USER_DATA = 32 * 1024


def seed_choices(body: Fields) -> tuple[bool | None, str | None]:
    """``Seed`` (write a cloud-init seed: true, false, or null as the
    images say) and ``UserData`` (the user's own user-data for it: a
    ``#cloud-config``, a script, anything cloud-init takes)."""
    seed = body.bool("Seed")
    user_data = body.str("UserData", max_length=MAX_USER_DATA)
    if user_data is not None and not user_data.strip():
        user_data = None
    if user_data is not None and seed is False:
        raise BadRequest("UserData: given with Seed false, it would reach nothing")
    return seed, user_data


def power_choices(body: Fields, machine: Machine) -> tuple[str, str]:
    """``Power`` (what pxed does now: cycle, on, none) and ``After`` (once
    the work is complete: reboot, poweroff, none); the machine's power
    settings give the defaults."""
    mode = choice(body, "Power", power_db.ON_QUEUE) or machine.power.on_queue
    after = choice(body, "After", power_db.AFTER) or machine.power.after
    if (mode, after) != ("none", "none") and not machine.power.enabled:
        raise Conflict(
            "Power/After: the machine has no power driver (PUT /machine/{mac} with Power)"
        )
    return mode, after


class QueueResource:
    def __init__(self, db: DBPool, power: PowerService, credentials: Credentials) -> None:
        self._db = db
        self._power = power
        # The work's machine credential is minted as it is queued.
        self._credentials = credentials

    @route("/machine/<mac>/boot", ["POST"], access="signed-in")
    async def enqueue(self, request: IRequest, mac: str) -> dict:
        body = read_json(request)
        machine = await machine_or_404(self._db, mac)
        await check_lease(self._db, request, machine)
        caller = user(request)
        setup_uuid = setup_uuid_of(body)
        if setup_uuid is not None:
            setup = await self._db.run(setups.thd_get, setup_uuid)
            if setup is None:
                raise BadRequest(f"SetupUUID: no image setup {setup_uuid}")
            check_owner(identity(request), setup.owner)
            update = body.bool("Update")
            update = True if update is None else update
            _check_managed(machine)
            mode, after = power_choices(body, machine)
            seed, user_data = seed_choices(body)
            erase_asked = choice(body, "Erase", erase.ASKABLE)
            # The work belongs to the setup's owner (a moderator may queue
            # it for them); the event log says who queued it.
            # Of this machine only: the boot view goes on answering the others.
            work = await self._db.run(
                concerning(machine.id, self._credentials.ahead(queue.thd_enqueue)),
                machine.id,
                setup,
                update,
                setup.owner,
                actor(request),
                after,
                seed,
                user_data,
                erase_asked,
            )
            self._power.start_work(machine, mode, work.id, actor(request))
            return render.work(work, machine.macs[0])
        # The seed's form: one image at a version, wrapped into a setup.
        image_uuid = body.str("ImageUUID", max_length=36)
        if image_uuid is None:
            raise BadRequest("SetupUUID: required (or ImageUUID and Version)")
        image = await self._db.run(images.thd_get, image_uuid)
        if image is None:
            raise BadRequest(f"ImageUUID: no image {image_uuid}")
        check_owner(identity(request), image.owner)
        update = bool(body.bool("Update"))
        version = body.int("Version", bits=32)
        # Checked before the setup is made: a refused request leaves nothing.
        _check_managed(machine)
        mode, after = power_choices(body, machine)
        seed, user_data = seed_choices(body)
        erase_asked = choice(body, "Erase", erase.ASKABLE)
        work = await self._db.run(
            concerning(machine.id, self._credentials.ahead(queue.thd_enqueue_image)),
            machine.id,
            caller.username,
            f"{image.name} for {machine.name}",
            setups.Wanted(image_uuid, version, update),
            caller.is_staff,
            actor(request),
            after,
            seed,
            user_data,
            erase_asked,
        )
        self._power.start_work(machine, mode, work.id, actor(request))
        return render.work(work, machine.macs[0])

    @route("/machine/<mac>/erase", ["POST"], access="admin")
    async def erase(self, request: IRequest, mac: str) -> dict:
        """Work that writes no image: the management OS erases every disk of
        the machine (``Policy``: metadata, discard or full; by default the
        machine's own, or metadata where that is none), then the machine
        is powered off (``After``) where pxed has its power."""
        body = read_json(request)
        machine = await machine_or_404(self._db, mac)
        policy = choice(body, "Policy", erase.ASKABLE)
        if policy is None:
            policy = machine.erase if machine.erase in erase.ASKABLE else erase.DEFAULT
        _check_managed(machine)
        mode, after = power_choices(body, machine)
        if body.raw("After") is None and machine.power.enabled:
            after = "poweroff"  # an erased machine has nothing to boot
        work = await self._db.run(
            concerning(machine.id, self._credentials.ahead(queue.thd_enqueue_erase)),
            machine.id,
            user(request).username,
            actor(request),
            policy,
            after,
        )
        request.setResponseCode(201)
        self._power.start_work(machine, mode, work.id, actor(request))
        return render.work(work, machine.macs[0])

    @route("/machine/<mac>/boot/queue", ["GET"], access="signed-in")
    async def list_queue(self, request: IRequest, mac: str) -> list:
        machine = await machine_or_404(self._db, mac)
        caller = user(request)
        found = await self._db.run(
            queue.thd_list, machine.id, None if caller.is_staff else caller.username
        )
        return [render.work(w, machine.macs[0]) for w in found]

    @route("/machine/<mac>/boot/queue/<int:work_id>", ["DELETE"], access="owner")
    async def cancel(self, request: IRequest, mac: str, work_id: int) -> dict:
        machine = await machine_or_404(self._db, mac)
        work = await self._db.run(queue.thd_get, machine.id, work_id)
        if work is None:
            raise NotFound(f"no queue entry {work_id} for this machine")
        try:
            check_owner(identity(request), work.owner)
        except Forbidden:
            raise Forbidden("only who queued it, moderators and admins cancel it") from None
        work = await self._db.run(
            concerning(machine.id, queue.thd_cancel), machine.id, work_id, actor(request)
        )
        return render.work(work, machine.macs[0])
