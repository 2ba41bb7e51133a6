"""Static files (the management OS kernel and initramfs) under /static/."""

from __future__ import annotations

import math

from twisted.web import http, resource, static
from twisted.web.iweb import IRequest

from pxed.web import router, sendfile

# 1 MiB reads instead of Twisted's 64 KiB where sendfile is not used: 1.5-1.9
# GB/s instead of 1.0-1.1 GB/s, serving a cached 2 GiB file over loopback on
# this 2-core machine kind (measured before sendfile; bench/results/latest.md
# has today's downloads, by sendfile).
READ_SIZE = 1024 * 1024


class JSONError(resource.Resource):
    """An error answered as the rest of the API answers them: JSON
    ``{"error": …}`` (Twisted's own pages are HTML)."""

    isLeaf = True

    def __init__(self, status: int, message: str) -> None:
        super().__init__()
        self._status = status
        self._message = message

    def render(self, request: IRequest) -> bytes:
        return router.error_body(request, self._status, self._message)

    def getChild(self, path: bytes, request: IRequest) -> resource.Resource:
        return self


class StaticFiles(static.File):
    """static.File without directory listings, with large reads, with
    If-Range honoured (a stale validator means the whole file, not a range
    of a changed one), and with JSON errors."""

    childNotFound = JSONError(404, "no such file")
    forbidden = JSONError(403, "forbidden")

    def __init__(
        self,
        path: str,
        defaultType: str = "application/octet-stream",
        ignoredExts: tuple = (),
        registry=None,
        allowExt: int = 0,
        etag: str | None = None,
    ) -> None:
        super().__init__(path, defaultType, ignoredExts, registry, allowExt)
        self.etag = etag.encode() if etag else None

    def directoryListing(self) -> resource.Resource:
        return self.childNotFound

    def getChild(self, path: bytes, request: IRequest) -> resource.Resource:
        # A NUL (%00) cannot be in a file name; the OS would refuse it with
        # a ValueError, not "no such file".
        if b"\x00" in path:
            return self.childNotFound
        return super().getChild(path, request)

    def makeProducer(self, request: IRequest, fileForReading):
        # A file's bytes go out: counted as a download (pxed.web.site).
        request.download = True
        producer = super().makeProducer(request, fileForReading)
        transport = getattr(request.channel, "transport", None)
        # Plain TCP: the kernel copies file to socket (sendfile), as nginx
        # does.  TLS, multi-range answers, and a Twisted whose transport
        # internals sendfile.py does not know keep Twisted's producers.
        if sendfile.usable(transport):
            if isinstance(producer, static.SingleRangeStaticProducer):
                return sendfile.SendfileProducer(
                    request, fileForReading, producer.offset, producer.size
                )
            if isinstance(producer, static.NoRangeStaticProducer):
                return sendfile.SendfileProducer(request, fileForReading, 0, self.getFileSize())
        producer.bufferSize = READ_SIZE
        return producer

    def render_GET(self, request: IRequest):
        if self.etag is not None:
            if request.setETag(self.etag) is http.CACHED:
                return b""
        if_range = request.getHeader(b"if-range")
        if if_range is not None and request.getHeader(b"range") is not None:
            if if_range.startswith((b'"', b"W/")):
                current = self.etag
            else:
                # Last-Modified goes out rounded up to the second
                # (Request.setLastModified), so compare with that.
                self.restat(False)
                current = http.datetimeToString(math.ceil(self.getModificationTime()))
            if if_range != current:
                request.requestHeaders.removeHeader(b"range")
        return super().render_GET(request)

    render_HEAD = render_GET
