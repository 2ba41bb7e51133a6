"""Static files (the management OS kernel and initramfs) under /static/."""

from __future__ import annotations

import math
import os

from twisted.internet import tcp
from twisted.web import http, resource, static
from twisted.web.iweb import IRequest

# 1 MiB reads instead of Twisted's 64 KiB: 1.5-1.9 GB/s instead of 1.0-1.1
# GB/s over loopback on this machine kind (DESIGN.md).
READ_SIZE = 1024 * 1024


class SendfileProducer:
    """Sends *size* bytes of a file from *offset* with os.sendfile, driven
    by the transport: whenever its buffer is empty and the socket writable,
    the transport resumes the HTTP channel, which resumes this producer."""

    CHUNK = 4 * 1024 * 1024

    def __init__(self, request: IRequest, fileobj, offset: int, size: int) -> None:
        self.request = request
        self.file = fileobj
        self.offset = offset
        self.remaining = size
        self.transport = request.channel.transport
        self.done = False

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.request.write(b"")  # the status line and headers, into the buffer
        self._wait_for_socket()

    def _wait_for_socket(self) -> None:
        # doWrite flushes Twisted's buffer, then (producer paused) resumes
        # the channel, which resumes us.
        self.transport.producerPaused = True
        self.transport.startWriting()

    def resumeProducing(self) -> None:
        if self.done:
            return
        t = self.transport
        if len(t.dataBuffer) > t.offset or t._tempDataLen:
            self._wait_for_socket()
            return
        sock = t.socket.fileno()
        fd = self.file.fileno()
        try:
            while self.remaining > 0:
                sent = os.sendfile(sock, fd, self.offset, min(self.remaining, self.CHUNK))
                if sent == 0:  # the file got shorter: nothing sane to send
                    self.stopProducing()
                    t.abortConnection()
                    return
                self.offset += sent
                self.remaining -= sent
                self.request.sentLength += sent
        except BlockingIOError:
            self._wait_for_socket()
            return
        except OSError:
            self.stopProducing()
            t.abortConnection()
            return
        self.done = True
        self.file.close()
        self.request.unregisterProducer()
        self.request.finish()

    def pauseProducing(self) -> None:
        # Nothing to pause: we only send when the transport asks.
        pass

    def stopProducing(self) -> None:
        self.done = True
        self.file.close()


class StaticFiles(static.File):
    """static.File without directory listings, with large reads, and with
    If-Range honoured (a stale validator means the whole file, not a range
    of a changed one)."""

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

    def makeProducer(self, request: IRequest, fileForReading):
        producer = super().makeProducer(request, fileForReading)
        transport = getattr(request.channel, "transport", None)
        # Plain TCP: the kernel copies file to socket (sendfile), as nginx
        # does; 0.94x nginx instead of 0.79x with 1 MiB reads (bench/).  TLS
        # and multi-range answers keep Twisted's producers.
        if type(transport) is tcp.Server and hasattr(os, "sendfile"):
            if isinstance(producer, static.SingleRangeStaticProducer):
                return SendfileProducer(request, fileForReading, producer.offset, producer.size)
            if isinstance(producer, static.NoRangeStaticProducer):
                return SendfileProducer(request, fileForReading, 0, self.getFileSize())
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
