"""Building an image from a Dockerfile: /image/{uuid}/docker, /build/{id}."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from pxed.builder.worker import BuildWorker, timings_of
from pxed.db import builds
from pxed.db.builds import Build
from pxed.db.pool import DBPool
from pxed.errors import BadRequest, NotFound, PayloadTooLarge
from pxed.web.auth import actor
from pxed.web.body import BoundedBody, query_arg
from pxed.web.imageaccess import ImageAccess
from pxed.web.origin import Origin
from pxed.web.receive import receive
from pxed.web.render import iso
from pxed.web.router import route
from pxed.web.upload import UploadBody
from pxed.workers import IOPool

MAX_DOCKERFILE = 1024 * 1024
# How often a followed build log looks for new lines.
FOLLOW_INTERVAL = 0.5


def _read_dockerfile(path) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_DOCKERFILE + 1)
    if len(data) > MAX_DOCKERFILE:
        raise PayloadTooLarge(f"a Dockerfile is limited to {MAX_DOCKERFILE} bytes")
    return data


class BuildsResource:
    def __init__(
        self,
        db: DBPool,
        io: IOPool,
        builder: BuildWorker,
        access: ImageAccess,
        origin: Origin,
        reactor: IReactorTime,
    ) -> None:
        self._db = db
        self._io = io
        self._builder = builder
        self._access = access
        self._origin = origin
        self._reactor = reactor

    def build_json(self, request: IRequest, b: Build) -> dict:
        url = f"{self._origin.base_url(request)}/build/{b.id}"
        return {
            "ID": b.id,
            "State": b.state,
            "Image": b.image_uuid,
            "Format": b.format,
            "Username": b.owner,
            "Message": b.message,
            "Version": b.version,
            "Timings": timings_of(b),
            "CreatedAt": iso(b.created_at),
            "StartedAt": iso(b.started_at),
            "FinishedAt": iso(b.finished_at),
            "URL": url,
            "LogURL": f"{url}/log",
        }

    async def owned_build(self, request: IRequest, build_id: int) -> Build:
        build = await self._db.run(builds.thd_get, build_id)
        if build is None:
            raise NotFound(f"no build {build_id}")
        await self._access.readable(request, build.image_uuid)
        return build

    @route("/image/<uuid>/docker", ["POST"], access="owner")
    async def submit_build(self, request: IRequest, uuid: str) -> dict:
        image = await self._access.readable(request, uuid)
        body = request.content
        context = None
        fmt = query_arg(request, "format")
        if isinstance(body, UploadBody):
            if body.error:
                raise BadRequest(body.error)
            staged = await receive(request, "file")
            dockerfile = await self._io.run(_read_dockerfile, staged.path)
            if "context" in body.files:
                context = await receive(request, "context")
            if fmt is None and "format" in body.fields:
                fmt = body.fields["format"].decode("utf-8", "replace").strip()
        elif isinstance(body, BoundedBody):
            if body.overflow:
                raise PayloadTooLarge(f"a Dockerfile is limited to {MAX_DOCKERFILE} bytes")
            body.seek(0)
            dockerfile = body.read()
        else:
            raise BadRequest("send the Dockerfile as the body or as a multipart 'file' part")
        fmt = fmt or "disk"
        if fmt not in builds.FORMATS:
            raise BadRequest(f"format: one of {', '.join(builds.FORMATS)}")
        try:
            text = dockerfile.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the Dockerfile is not UTF-8 text") from None
        if not text.strip():
            raise BadRequest("the Dockerfile is empty")
        build = await self._builder.submit(
            image.uuid, image.owner or actor(request), fmt, text, context, actor(request)
        )
        request.setResponseCode(202)
        request.setHeader(b"location", f"/build/{build.id}".encode())
        return self.build_json(request, build)

    @route("/build/<int:build_id>", ["GET"], access="owner")
    async def get_build(self, request: IRequest, build_id: int) -> dict:
        return self.build_json(request, await self.owned_build(request, build_id))

    @route("/build/<int:build_id>", ["DELETE"], access="owner")
    async def cancel_build(self, request: IRequest, build_id: int) -> dict:
        await self.owned_build(request, build_id)
        return self.build_json(request, await self._builder.cancel(build_id, actor(request)))

    @route("/image/<uuid>/builds", ["GET"], access="owner")
    async def image_builds(self, request: IRequest, uuid: str) -> list:
        await self._access.readable(request, uuid)
        return [
            self.build_json(request, b) for b in await self._db.run(builds.thd_list_for_image, uuid)
        ]

    @route("/build/<int:build_id>/log", ["GET"], access="owner")
    async def build_log(self, request: IRequest, build_id: int) -> bytes:
        """The log as plain text; while the build runs, the answer stays open
        and new lines follow as they are stored."""
        build = await self.owned_build(request, build_id)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        gone = []
        request.notifyFinish().addBoth(gone.append)
        last = -1
        follow = b"follow" not in request.args or request.args[b"follow"][0] not in (b"0", b"false")
        while True:
            lines = await self._db.run(builds.thd_log, build_id, last)
            if lines:
                last = lines[-1][0]
                request.write("".join(f"{line}\n" for _, line in lines).encode())
            if build.finished or not follow or gone:
                break
            await task.deferLater(self._reactor, FOLLOW_INTERVAL, lambda: None)
            build = await self._db.run(builds.get_or_404, build_id)
            if build.finished:
                continue  # one more read picks up the last lines
        return b""
