"""The twisted.web Site: request logging through twisted.logger and no
tracebacks in responses."""

from __future__ import annotations

import time

from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from pxed.storage import READ_SIZE, Storage
from pxed.web.auth import SESSION_COOKIE
from pxed.web.body import MAX_JSON_BODY, BoundedBody
from pxed.web.cors import CORS
from pxed.web.upload import UploadBody, is_upload
from pxed.workers import ThreadPoolService

access_log = Logger(namespace="pxed.access")


class PxedRequest(Request):
    started: float

    def gotLength(self, length: int | None) -> None:
        # Only the headers are known here, not yet the method or path.
        site = self.channel.site
        ctype = self.requestHeaders.getRawHeaders(b"content-type", [b""])[0]
        # Nobody uploads without a credential; such a body is not written to
        # disk at all (the request gets its 401 once it has arrived).
        has_credential = self.requestHeaders.hasHeader(b"authorization") or (
            SESSION_COOKIE + b"=" in b";".join(self.requestHeaders.getRawHeaders(b"cookie", []))
        )
        if is_upload(ctype) and site.storage is not None and has_credential:
            # 1 MiB socket reads: 0.40-0.45 GB/s instead of 0.27-0.37 with
            # 64 KiB on this machine kind (DESIGN.md).
            if hasattr(self.channel.transport, "bufferSize"):
                self.channel.transport.bufferSize = READ_SIZE
            self.content = UploadBody(site.storage, site.io, ctype, self.channel.transport)
        else:
            self.content = BoundedBody(MAX_JSON_BODY)

    def process(self) -> None:
        self.started = time.monotonic()
        # self.site is only set inside Request.process.
        if self.channel.site.cors.apply(self):
            return
        super().process()


class PxedSite(Site):
    displayTracebacks = False
    requestFactory = PxedRequest

    def __init__(
        self,
        root: IResource,
        cors_origins: tuple[str, ...] = (),
        storage: Storage | None = None,
        reactor=None,
        io: ThreadPoolService | None = None,
    ) -> None:
        # parsePOSTFormSubmission=False: Twisted would otherwise parse whole
        # multipart bodies into memory.
        super().__init__(
            root, requestFactory=PxedRequest, parsePOSTFormSubmission=False, reactor=reactor
        )
        self.cors = CORS(cors_origins)
        self.storage = storage
        self.reactor = reactor
        self.io = io  # writes and hashes uploads

    def log(self, request: Request) -> None:
        # The path only: query strings may carry secrets (OAuth codes).
        duration = time.monotonic() - getattr(request, "started", time.monotonic())
        access_log.info(
            '{client} "{method} {path}" {status} {size} {ms:.1f}ms',
            client=request.getClientAddress().host
            if hasattr(request.getClientAddress(), "host")
            else "-",
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("utf-8", "replace"),
            status=request.code,
            size=request.sentLength,
            ms=duration * 1000,
        )
