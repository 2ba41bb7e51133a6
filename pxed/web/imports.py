"""Images from a URL: ``POST /image/{uuid}/import`` starts an import
(pxed.imports.service) and answers 202; ``GET /image/{uuid}/events`` is the
image's events, where the import's progress and end are."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from pxed.db import events
from pxed.db.pool import DBPool
from pxed.errors import BadRequest, Conflict
from pxed.imports.fetch import check_url, shown
from pxed.imports.service import Importer
from pxed.web import render
from pxed.web.auth import actor
from pxed.web.body import read_json
from pxed.web.imageaccess import ImageAccess
from pxed.web.router import route

MAX_URL = 8192
EVENTS_LIMIT = 200


def _sha256(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    value = value.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise BadRequest("Sha256: expected 64 hex digits")
    return value


class ImportsResource:
    def __init__(self, db: DBPool, importer: Importer, access: ImageAccess) -> None:
        self._db = db
        self._importer = importer
        self._access = access

    @route("/image/<uuid>/import", ["POST"], access="owner")
    async def import_image(self, request: IRequest, uuid: str) -> dict:
        # Who may import comes first: a caller who may not gets 403/404
        # whatever the body says.
        image = await self._access.readable(request, uuid)
        body = read_json(request)
        url = body.str("URL", required=True, max_length=MAX_URL)
        if url is None or not url.strip():
            raise BadRequest("URL: must not be empty")
        try:
            url = check_url(url.strip())
        except ValueError as e:
            raise BadRequest(f"URL: {e}") from None
        sha256 = _sha256(body.str("Sha256"))
        if image.type == "machine":
            raise Conflict("a machine image is its machine's: import into an image of your own")
        job = await self._importer.start(image.uuid, url, sha256, actor(request))
        request.setResponseCode(202)
        request.setHeader(b"location", f"/image/{image.uuid}/events".encode())
        return {
            "ID": job,
            "Image": image.uuid,
            "URL": shown(url),
            "Sha256": sha256,
            "State": "started",
            "EventsURL": f"/image/{image.uuid}/events",
        }

    @route("/image/<uuid>/events", ["GET"], access="owner")
    async def image_events(self, request: IRequest, uuid: str) -> list:
        image = await self._access.readable(request, uuid)
        found = await self._db.run(events.thd_list, "image", image.uuid, EVENTS_LIMIT)
        return [render.event(e) for e in found]
