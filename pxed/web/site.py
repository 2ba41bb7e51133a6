"""The twisted.web Site: request logging through twisted.logger and no
tracebacks in responses."""

from __future__ import annotations

import time

from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from pxed.web.cors import CORS

access_log = Logger(namespace="pxed.access")


class PxedRequest(Request):
    started: float

    def process(self) -> None:
        self.started = time.monotonic()
        # self.site is only set inside Request.process.
        if self.channel.site.cors.apply(self):
            return
        super().process()


class PxedSite(Site):
    displayTracebacks = False
    requestFactory = PxedRequest

    def __init__(self, root: IResource, cors_origins: tuple[str, ...] = ()) -> None:
        # parsePOSTFormSubmission=False: Twisted would otherwise parse whole
        # multipart bodies into memory.
        super().__init__(root, requestFactory=PxedRequest, parsePOSTFormSubmission=False)
        self.cors = CORS(cors_origins)

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
