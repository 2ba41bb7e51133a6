"""Images: metadata, versions, streaming upload and download."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.web.iweb import IRequest

from pxed.db import images, machines
from pxed.db.images import Image, ImageFields
from pxed.db.pool import DBPool
from pxed.errors import BadRequest, Conflict, Forbidden, NotFound
from pxed.imagestore import ImageStore
from pxed.web import render
from pxed.web.auth import actor, identity, user
from pxed.web.body import Fields, header, read_json
from pxed.web.chunked import Downloads
from pxed.web.imageaccess import ImageAccess
from pxed.web.lookup import machine_or_404
from pxed.web.receive import receive_checked
from pxed.web.router import route

if TYPE_CHECKING:
    from pxed.imports.service import Importer

DEFAULT_SIZE = 512 * 1024 * 1024
MIN_SIZE = 1024 * 1024
# ext4's largest file (with 4 KiB blocks) is just under 16 TiB.
MAX_SIZE = 16 * 1024**4 - 1024 * 1024


def _choice(body: Fields, name: str, allowed: tuple[str, ...]) -> str | None:
    """An enum value, case-insensitive (the original's docs write "System",
    "GZip"), stored lower case; "" is unset, as Go's zero value."""
    value = body.str(name)
    if not value:
        return None
    if value.lower() not in allowed:
        raise BadRequest(f"{name}: must be one of {', '.join(allowed)}")
    return value.lower()


def max_image_size(configured: int, data_dir: Path) -> int:
    """The largest image POST /image creates: the configured size, else half
    the total size of the data dir's filesystem; never more than MAX_SIZE."""
    if configured:
        return min(configured, MAX_SIZE)
    try:
        fs = os.statvfs(data_dir)
    except OSError:
        return MAX_SIZE
    return min(fs.f_blocks * fs.f_frsize // 2, MAX_SIZE)


def _bytes(n: int) -> str:
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} bytes"


def image_fields(body: Fields, creating: bool, max_size: int = MAX_SIZE) -> ImageFields:
    name = body.str("Name", required=creating)
    if name is not None and not name.strip():
        raise BadRequest("Name: must not be empty")
    size = body.int("Size")
    if size is not None and size < MIN_SIZE:
        raise BadRequest(f"Size: at least {MIN_SIZE} bytes (1 MiB)")
    if creating and size is not None and size > max_size:
        raise BadRequest(
            f"Size: at most {max_size} bytes ({_bytes(max_size)}, the server's max_image_size)"
        )
    return ImageFields(
        name=name,
        type=_choice(body, "Type", images.USER_TYPES),
        disk_uuid=body.str("DiskUUID", max_length=64),
        compression=_choice(body, "DiskCompressionStrategy", images.COMPRESSIONS),
        file_type=_choice(body, "ImageFileType", images.FILE_TYPES),
        filesystem=_choice(body, "Filesystem", images.FILESYSTEMS),
        size=size if size is not None else (DEFAULT_SIZE if creating else None),
        cloud_init=body.bool("CloudInit"),
        grow=body.bool("Grow"),
    )


class ImagesResource:
    def __init__(
        self,
        db: DBPool,
        store: ImageStore,
        access: ImageAccess,
        max_size: int = MAX_SIZE,
        importer: Importer | None = None,
        downloads: Downloads | None = None,
    ) -> None:
        self._importer = importer
        self._downloads = downloads or Downloads(store.storage.path, None, store.io)
        self._db = db
        self._store = store
        self._access = access
        self._max_size = max_size

    async def _store_upload(self, request: IRequest, image: Image, origin: str) -> images.Version:
        replace = (header(request, "X-BAAS-NewVersion") or "").strip().lower() == "false"
        staged = await receive_checked(request)
        if origin == "upload" and self._importer is not None:
            # A user's qcow2, VMDK, VHDX or xz file, once complete and
            # checked, is stored as the raw disk it holds, compressed as the
            # image says (a machine's capture is stored as sent, whatever
            # its first bytes).  The version's sha256 is then the stored
            # bytes'; the client's digest was the file's it sent.
            stored, made = await self._importer.convert_upload(staged, image.compression)
            try:
                return await self._store.add_version(
                    image.uuid, stored, origin, replace, actor(request)
                )
            finally:
                for path in made:
                    await self._importer.discard(path)
        return await self._store.add_version(image.uuid, staged, origin, replace, actor(request))

    async def _serve_version(self, request: IRequest, image: Image, version: images.Version):
        resource = await self._downloads.resource(image.uuid, version.file, f'"{version.sha256}"')
        request.setHeader(
            b"content-disposition", f"attachment; filename={image.uuid}-{version.version}.img"
        )
        request.setHeader(b"x-checksum-sha256", version.sha256.encode())
        return resource

    async def _create(self, request: IRequest, owner: str) -> dict:
        fields = image_fields(read_json(request), creating=True, max_size=self._max_size)
        image = await self._store.create_image(owner, fields, fields.size, actor(request))
        request.setResponseCode(201)
        return render.image(image)

    # -- routes -------------------------------------------------------------

    @route("/image", ["POST"], access="signed-in")
    async def create_image(self, request: IRequest) -> dict:
        body = read_json(request)
        caller = user(request)
        owner = body.str("Owner") or body.str("Username") or caller.username
        if owner != caller.username and not caller.is_staff:
            raise Forbidden("Owner: only moderators and admins create images for others")
        return await self._create(request, owner)

    @route("/user/<name>/image", ["POST"], access="self-or-staff")
    async def create_user_image(self, request: IRequest, name: str) -> dict:
        return await self._create(request, name)

    @route("/user/<name>/images", ["GET"], access="self-or-staff")
    async def list_user_images(self, request: IRequest, name: str) -> list:
        return [render.image(i) for i in await self._db.run(images.thd_list_by_owner, name)]

    @route("/user/<name>/images/<image_name>", ["GET"], access="self-or-staff")
    async def user_images_by_name(self, request: IRequest, name: str, image_name: str) -> list:
        found = await self._db.run(images.thd_list_by_owner, name, image_name)
        return [render.image(i) for i in found]

    @route("/image/<uuid>", ["GET"], access="owner")
    async def get_image(self, request: IRequest, uuid: str) -> dict:
        return render.image(await self._access.readable(request, uuid))

    @route("/image/<uuid>", ["PUT"], access="owner")
    async def update_image(self, request: IRequest, uuid: str) -> dict:
        image = await self._access.readable(request, uuid)
        fields = image_fields(read_json(request), creating=False)
        for name, attr in (
            ("DiskCompressionStrategy", "compression"),
            ("ImageFileType", "file_type"),
            ("Filesystem", "filesystem"),
            ("Size", "size"),
        ):
            value = getattr(fields, attr)
            if value is not None and value != getattr(image, attr):
                raise BadRequest(f"{name}: fixed when the image is created")
        if image.type == "machine" and fields.type not in (None, "machine"):
            raise BadRequest("Type: a machine image stays a machine image")
        image = await self._db.run(images.thd_update, uuid, fields, actor(request))
        return render.image(image)

    @route("/image/<uuid>", ["DELETE"], access="owner")
    async def delete_image(self, request: IRequest, uuid: str) -> str:
        image = await self._access.readable(request, uuid)
        if image.type == "machine":
            raise Conflict("a machine image goes with its machine: delete the machine")
        await self._db.run(images.thd_delete, uuid, actor(request))
        await self._store.remove_image(uuid)
        return "Successfully deleted image"

    @route("/image/<uuid>", ["POST"], access="owner-or-machine")
    async def upload_image(self, request: IRequest, uuid: str):
        image, origin = await self._access.writable(request, uuid)
        version = await self._store_upload(request, image, origin)
        return upload_answer(request, image, version)

    @route("/image/<uuid>/latest", ["GET", "HEAD", "POST"], access="owner-or-machine")
    async def download_latest(self, request: IRequest, uuid: str):
        image = await self._access.readable(request, uuid)
        if image.latest is None:
            raise NotFound("the image has no versions")
        return await self._serve_version(request, image, image.latest)

    @route("/image/<uuid>/<int:version>", ["GET", "HEAD"], access="owner-or-machine")
    async def download_version(self, request: IRequest, uuid: str, version: int):
        image = await self._access.readable(request, uuid)
        found = image.version(version)
        if found is None:
            raise NotFound(f"image {uuid} has no version {version}")
        return await self._serve_version(request, image, found)

    @route("/image/<uuid>/<int:version>/index", ["GET", "HEAD"], access="owner-or-machine")
    async def version_index(self, request: IRequest, uuid: str, version: int):
        """The version's chunk index (binary, pxed/agent/chunkindex.py): the
        content-defined chunks its bytes are cut into, for a delta deploy;
        404 until the chunk store has indexed it."""
        image = await self._access.readable(request, uuid)
        found = image.version(version)
        if found is None:
            raise NotFound(f"image {uuid} has no version {version}")
        resource = self._downloads.index(uuid, found.file) if found.chunks is not None else None
        if resource is None:
            raise NotFound(f"version {version} is not in the chunk store yet")
        return resource

    @route("/image/<uuid>/<int:version>", ["DELETE"], access="owner")
    async def delete_version(self, request: IRequest, uuid: str, version: int) -> dict:
        """Delete one version (not one frozen in a setup or held by boot
        work, nor an image's only one); the chunks no other version uses
        are collected."""
        await self._access.readable(request, uuid)
        deleted = await self._store.delete_version(uuid, version, actor(request))
        return render.version(deleted, uuid)

    # -- the machine's own image ---------------------------------------------

    @route("/machine/<mac>/image", ["GET", "HEAD"], access="machine")
    async def download_machine_image(self, request: IRequest, mac: str):
        machine = await machine_or_404(self._db, mac)
        image = await self._db.run(images.thd_get, machine.image_uuid)
        if image is None or image.latest is None:
            raise NotFound("the machine image has no versions")
        return await self._serve_version(request, image, image.latest)

    @route("/machine/<mac>/disk/<uuid>", ["POST"], access="machine")
    async def upload_machine_disk(self, request: IRequest, mac: str, uuid: str):
        machine = await machine_or_404(self._db, mac)
        image = await self._db.run(images.thd_get, uuid)
        if image is None:
            raise NotFound(f"no image {uuid}")
        cred = identity(request).machine
        origin = "capture" if cred is not None else "upload"
        if uuid != machine.image_uuid:
            if cred is None:
                raise Forbidden("upload to /image/<uuid> instead")
            image, origin = await self._access.writable(request, uuid)
        version = await self._store_upload(request, image, origin)
        await self._db.run(machines.thd_touch, machine.id)
        return upload_answer(request, image, version)


def upload_answer(request: IRequest, image: Image, version: images.Version):
    if b"application/json" in (request.getHeader(b"accept") or b""):
        return {"UUID": image.uuid, **render.version(version, image.uuid)}
    return f"Successfully uploaded image: {version.version}"
