"""Images: metadata, versions, streaming upload and download."""

from __future__ import annotations

import base64
import binascii
import errno

from twisted.web.iweb import IRequest

from pxed.db import images, machines, queue
from pxed.db.images import Image, ImageFields
from pxed.errors import BadRequest, Conflict, Forbidden, NotFound, UnsupportedMediaType
from pxed.storage import InsufficientStorage, Staged
from pxed.web import render
from pxed.web.auth import check_owner
from pxed.web.body import Fields, read_json
from pxed.web.router import route
from pxed.web.static import StaticFiles
from pxed.web.upload import UploadBody

DEFAULT_SIZE = 512 * 1024 * 1024
MAX_SIZE = 16 * 1024**4


class VersionFile(StaticFiles):
    """A version file; POST reads it too (the original's /latest was POST)."""

    def render_POST(self, request: IRequest):
        return self.render_GET(request)


def _choice(body: Fields, name: str, allowed: tuple[str, ...]) -> str | None:
    value = body.str(name)
    if value is not None and value not in allowed:
        raise BadRequest(f"{name}: must be one of {', '.join(allowed)}")
    return value


def image_fields(body: Fields, creating: bool) -> ImageFields:
    name = body.str("Name", required=creating)
    if name is not None and not name.strip():
        raise BadRequest("Name: must not be empty")
    size = body.int("Size")
    if size is not None and not 1024 * 1024 <= size <= MAX_SIZE:
        raise BadRequest(f"Size: between 1 MiB and {MAX_SIZE} bytes")
    return ImageFields(
        name=name,
        type=_choice(body, "Type", images.USER_TYPES),
        disk_uuid=body.str("DiskUUID", max_length=64),
        compression=_choice(body, "DiskCompressionStrategy", images.COMPRESSIONS),
        file_type=_choice(body, "ImageFileType", images.FILE_TYPES),
        filesystem=_choice(body, "Filesystem", images.FILESYSTEMS),
        size=size if size is not None else (DEFAULT_SIZE if creating else None),
    )


def expected_sha256(request: IRequest) -> str | None:
    """The digest a client says the body has: ``X-Checksum-Sha256: <hex>``
    or RFC 9530 ``Content-Digest: sha-256=:<base64>:``."""
    hexdigest = request.getHeader("x-checksum-sha256")
    if hexdigest is not None:
        hexdigest = hexdigest.strip().lower()
        if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
            raise BadRequest("X-Checksum-Sha256: expected 64 hex digits")
        return hexdigest
    digest = request.getHeader("content-digest")
    if digest is not None:
        for item in digest.split(","):
            algo, _, value = item.strip().partition("=")
            if algo.strip().lower() == "sha-256":
                try:
                    raw = base64.b64decode(value.strip().strip(":"), validate=True)
                except binascii.Error:
                    raw = b""
                if len(raw) != 32:
                    raise BadRequest("Content-Digest: sha-256 must be 32 bytes in base64")
                return raw.hex()
        raise BadRequest("Content-Digest: only sha-256 is supported")
    return None


async def receive(request: IRequest, part: str = "file") -> Staged:
    """Wait for the streamed upload *part* to be on disk; 4xx/507 if not."""
    body = request.content
    if not isinstance(body, UploadBody):
        raise UnsupportedMediaType(
            "send the image as application/octet-stream or as multipart/form-data "
            "with a 'file' part"
        )
    if body.error:
        raise BadRequest(body.error)
    upload = body.files.get(part)
    if upload is None:
        raise BadRequest(f"multipart body has no {part!r} part")
    try:
        return await upload.finish()
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("not enough space on the server for this upload") from None
        raise


class ImagesRoutes:
    # -- helpers ------------------------------------------------------------

    async def readable_image(self, request: IRequest, image_uuid: str) -> Image:
        """The image, if the caller owns it, is staff, or is a machine whose
        current work includes it."""
        image = await self.db.run(images.thd_get, image_uuid)
        identity = self.identity(request)
        if identity.machine is not None:
            if image is None or image_uuid not in identity.machine.image_uuids:
                raise Forbidden("this machine credential does not cover that image")
            return image
        if image is None:
            raise NotFound(f"no image {image_uuid}")
        check_owner(identity, image.owner)
        return image

    async def writable_image(self, request: IRequest, image_uuid: str) -> tuple[Image, str]:
        """The image and the origin of a version written now: owners upload,
        machines capture images their running setup flags Update."""
        image = await self.readable_image(request, image_uuid)
        cred = self.identity(request).machine
        if cred is None:
            return image, "upload"
        capturable = await self.db.run(queue.thd_capturable, cred.machine_id)
        if image_uuid not in capturable:
            raise Forbidden("the running setup does not capture that image (Update is off)")
        return image, "capture"

    async def store_upload(self, request: IRequest, image: Image, origin: str) -> images.Version:
        replace = (request.getHeader("x-baas-newversion") or "").strip().lower() == "false"
        expected = expected_sha256(request)
        staged = await receive(request)
        if expected is not None and expected != staged.sha256:
            raise BadRequest(f"sha256 mismatch: expected {expected}, received {staged.sha256}")
        return await self.db.run(
            images.thd_commit_version,
            self.storage,
            image.uuid,
            staged,
            origin,
            replace,
            self.actor(request),
        )

    def serve_version(self, request: IRequest, image: Image, version: images.Version):
        request.setHeader(
            b"content-disposition", f"attachment; filename={image.uuid}-{version.version}.img"
        )
        request.setHeader(b"x-checksum-sha256", version.sha256.encode())
        path = self.storage.path(image.uuid, version.version)
        return VersionFile(str(path), etag=f'"{version.sha256}"')

    async def _create(self, request: IRequest, owner: str) -> dict:
        fields = image_fields(read_json(request), creating=True)
        image_uuid = images.new_uuid()
        async with self.blank_disk(
            fields.size, fields.filesystem or "raw", fields.compression or "none"
        ) as blank:
            image = await self.db.run(
                images.thd_create,
                self.storage,
                image_uuid,
                owner,
                fields,
                blank,
                self.actor(request),
            )
        return render.image(image)

    # -- routes -------------------------------------------------------------

    @route("/image", ["POST"], access="signed-in")
    async def create_image(self, request: IRequest) -> dict:
        body = read_json(request)
        user = self.identity(request).user
        owner = body.str("Owner") or body.str("Username") or user.username
        if owner != user.username and not user.is_staff:
            raise Forbidden("Owner: only moderators and admins create images for others")
        return await self._create(request, owner)

    @route("/user/<name>/image", ["POST"], access="self-or-staff")
    async def create_user_image(self, request: IRequest, name: str) -> dict:
        return await self._create(request, name)

    @route("/user/<name>/images", ["GET"], access="self-or-staff")
    async def list_user_images(self, request: IRequest, name: str) -> list:
        return [render.image(i) for i in await self.db.run(images.thd_list_by_owner, name)]

    @route("/user/<name>/images/<image_name>", ["GET"], access="self-or-staff")
    async def user_images_by_name(self, request: IRequest, name: str, image_name: str) -> list:
        found = await self.db.run(images.thd_list_by_owner, name, image_name)
        return [render.image(i) for i in found]

    @route("/image/<uuid>", ["GET"], access="owner")
    async def get_image(self, request: IRequest, uuid: str) -> dict:
        return render.image(await self.readable_image(request, uuid))

    @route("/image/<uuid>", ["PUT"], access="owner")
    async def update_image(self, request: IRequest, uuid: str) -> dict:
        image = await self.readable_image(request, uuid)
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
        image = await self.db.run(images.thd_update, uuid, fields, self.actor(request))
        return render.image(image)

    @route("/image/<uuid>", ["DELETE"], access="owner")
    async def delete_image(self, request: IRequest, uuid: str) -> str:
        image = await self.readable_image(request, uuid)
        if image.type == "machine":
            raise Conflict("a machine image goes with its machine: delete the machine")
        await self.db.run(images.thd_delete, uuid, self.actor(request))
        await self.io.run(self.storage.remove_image, uuid)
        return "Successfully deleted image"

    @route("/image/<uuid>", ["POST"], access="owner-or-machine")
    async def upload_image(self, request: IRequest, uuid: str):
        image, origin = await self.writable_image(request, uuid)
        version = await self.store_upload(request, image, origin)
        return upload_answer(request, image, version)

    @route("/image/<uuid>/latest", ["GET", "HEAD", "POST"], access="owner-or-machine")
    async def download_latest(self, request: IRequest, uuid: str):
        image = await self.readable_image(request, uuid)
        if image.latest is None:
            raise NotFound("the image has no versions")
        return self.serve_version(request, image, image.latest)

    @route("/image/<uuid>/<int:version>", ["GET", "HEAD"], access="owner-or-machine")
    async def download_version(self, request: IRequest, uuid: str, version: int):
        image = await self.readable_image(request, uuid)
        found = image.version(version)
        if found is None:
            raise NotFound(f"image {uuid} has no version {version}")
        return self.serve_version(request, image, found)

    # -- the machine's own image ---------------------------------------------

    @route("/machine/<mac>/image", ["GET", "HEAD"], access="machine")
    async def download_machine_image(self, request: IRequest, mac: str):
        machine = await self.machine_or_404(mac)
        image = await self.db.run(images.thd_get, machine.image_uuid)
        if image is None or image.latest is None:
            raise NotFound("the machine image has no versions")
        return self.serve_version(request, image, image.latest)

    @route("/machine/<mac>/disk/<uuid>", ["POST"], access="machine")
    async def upload_machine_disk(self, request: IRequest, mac: str, uuid: str):
        machine = await self.machine_or_404(mac)
        image = await self.db.run(images.thd_get, uuid)
        if image is None:
            raise NotFound(f"no image {uuid}")
        cred = self.identity(request).machine
        origin = "capture" if cred is not None else "upload"
        if uuid != machine.image_uuid:
            if cred is None:
                raise Forbidden("upload to /image/<uuid> instead")
            image, origin = await self.writable_image(request, uuid)
        version = await self.store_upload(request, image, origin)
        await self.db.run(machines.thd_touch, machine.id)
        return upload_answer(request, image, version)


def upload_answer(request: IRequest, image: Image, version: images.Version):
    if b"application/json" in (request.getHeader(b"accept") or b""):
        return {"UUID": image.uuid, **render.version(version)}
    return f"Successfully uploaded image: {version.version}"
