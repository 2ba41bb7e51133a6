"""Who may read and write an image: its owner, moderators and admins, and
a management OS whose current work includes it."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from pxed.db import images, queue
from pxed.db.images import Image
from pxed.db.pool import DBPool
from pxed.errors import Forbidden, NotFound
from pxed.web.auth import check_owner, identity


class ImageAccess:
    def __init__(self, db: DBPool) -> None:
        self._db = db

    async def readable(self, request: IRequest, image_uuid: str) -> Image:
        """The image, if the caller owns it, is staff, or is a machine whose
        current work includes it."""
        image = await self._db.run(images.thd_get, image_uuid)
        who = identity(request)
        if who.machine is not None:
            if image is None or image_uuid not in who.machine.image_uuids:
                raise Forbidden("this machine credential does not cover that image")
            return image
        if image is None:
            raise NotFound(f"no image {image_uuid}")
        check_owner(who, image.owner)
        return image

    async def writable(self, request: IRequest, image_uuid: str) -> tuple[Image, str]:
        """The image and the origin of a version written now: owners upload,
        machines capture images their running setup flags Update."""
        image = await self.readable(request, image_uuid)
        cred = identity(request).machine
        if cred is None:
            return image, "upload"
        capturable = await self._db.run(queue.thd_capturable, cred.machine_id)
        if image_uuid not in capturable:
            raise Forbidden("the running setup does not capture that image (Update is off)")
        return image, "capture"
