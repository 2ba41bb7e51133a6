"""Image setups: /user/{name}/image_setup…"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from pxed.agent.wire import DiskHints, WireError
from pxed.db import setups
from pxed.db.pool import DBPool
from pxed.errors import BadRequest
from pxed.web import render
from pxed.web.auth import actor, user
from pxed.web.body import Fields, query_arg, read_json
from pxed.web.router import route


def entry(item: Fields) -> setups.Wanted:
    """One setup entry in any of its forms: ``{"UUID"|"Uuid", "Version",
    "Update"}`` (the doc's) or the original's ImageFrozen ``{"Image":
    {"UUID"}, "Version": {"Version"}, "Update"}``; pxed's ``DiskHints``
    beside them (pxed.agent.hints)."""
    image = item.object("Image") if isinstance(item.raw("Image"), dict) else None
    image_uuid = (image or item).str("UUID", required=True, max_length=36)
    version_of = item.object("Version") if isinstance(item.raw("Version"), dict) else item
    version = version_of.int("Version", bits=32)
    if version is not None and version < 0:
        raise BadRequest("Version: must not be negative")
    try:
        hints = DiskHints.from_json(item.raw("DiskHints"))
    except WireError as e:
        raise BadRequest(str(e)) from None
    return setups.Wanted(image_uuid, version, bool(item.bool("Update")), hints)


def entries(body: Fields) -> list[setups.Wanted] | None:
    items = body.list("Images")
    if items is None:
        return None
    if not all(isinstance(i, dict) for i in items):
        raise BadRequest(
            'Images: must be a list of {"UUID", "Version", "Update"} or'
            ' {"Image": {"UUID"}, "Version": {"Version"}, "Update"}'
        )
    return [entry(Fields(i)) for i in items]


def setup_name(body: Fields, required: bool) -> str | None:
    name = body.str("Name", required=required)
    if name is not None and not name.strip():
        raise BadRequest("Name: must not be empty")
    return name


def _staff(request: IRequest) -> bool:
    return user(request).is_staff


class SetupsResource:
    def __init__(self, db: DBPool) -> None:
        self._db = db

    @route("/user/<name>/image_setup", ["POST"], access="self-or-staff")
    async def create_setup(self, request: IRequest, name: str) -> dict:
        body = read_json(request)
        setup = await self._db.run(
            setups.thd_create,
            name,
            setup_name(body, required=True),
            entries(body) or [],
            _staff(request),
            actor(request),
        )
        request.setResponseCode(201)
        return render.setup(setup)

    @route("/user/<name>/image_setups", ["GET"], access="self-or-staff")
    async def list_setups(self, request: IRequest, name: str) -> list:
        return [render.setup(s) for s in await self._db.run(setups.thd_list, name)]

    @route("/user/<name>/image_setup", ["GET"], access="self-or-staff")
    async def setups_by_name(self, request: IRequest, name: str) -> list:
        """The original's GetImageSetupsByName: ?Name=… (all when absent)."""
        wanted = query_arg(request, "Name")
        if wanted is None:
            wanted = query_arg(request, "name")
        found = await self._db.run(setups.thd_list, name, wanted)
        return [render.setup(s) for s in found]

    @route("/user/<name>/image_setup/<setup_uuid>", ["GET"], access="self-or-staff")
    async def get_setup(self, request: IRequest, name: str, setup_uuid: str) -> dict:
        return render.setup(await self._db.run(setups.get_owned, name, setup_uuid))

    @route("/user/<name>/image_setup/<setup_uuid>", ["PUT"], access="self-or-staff")
    async def update_setup(self, request: IRequest, name: str, setup_uuid: str) -> dict:
        body = read_json(request)
        setup = await self._db.run(
            setups.thd_update,
            name,
            setup_uuid,
            setup_name(body, required=False),
            entries(body),
            _staff(request),
            actor(request),
        )
        return render.setup(setup)

    @route("/user/<name>/image_setup/<setup_uuid>", ["DELETE"], access="self-or-staff")
    async def delete_setup(self, request: IRequest, name: str, setup_uuid: str) -> str:
        await self._db.run(setups.thd_delete, name, setup_uuid, actor(request))
        return "Successfully deleted image setup"

    @route("/user/<name>/image_setup/<setup_uuid>/images", ["GET"], access="self-or-staff")
    async def setup_images(self, request: IRequest, name: str, setup_uuid: str) -> list:
        # The setup's ImageFrozen entries.
        return render.setup(await self._db.run(setups.get_owned, name, setup_uuid))["Images"]

    @route("/user/<name>/image_setup/<setup_uuid>/images", ["POST"], access="self-or-staff")
    async def add_setup_image(self, request: IRequest, name: str, setup_uuid: str) -> dict:
        setup = await self._db.run(
            setups.thd_add_entry,
            name,
            setup_uuid,
            entry(read_json(request)),
            _staff(request),
            actor(request),
        )
        return render.setup(setup)

    @route("/user/<name>/image_setup/<setup_uuid>/images", ["DELETE"], access="self-or-staff")
    async def remove_setup_image(self, request: IRequest, name: str, setup_uuid: str) -> dict:
        query = query_arg(request, "UUID")
        if query is None:
            query = query_arg(request, "uuid")
        image_uuid = query if query is not None else entry(read_json(request)).image_uuid
        setup = await self._db.run(
            setups.thd_remove_entry, name, setup_uuid, image_uuid, actor(request)
        )
        return render.setup(setup)
