"""A version's download: its whole file (sendfile), or its bytes assembled
from the chunk store, byte for byte, with Range, HEAD, If-Range and ETag as
for a file.

Which one is decided on the reactor thread right before the answer starts,
so it cannot race the chunker: a whole file is removed only after its
index is in place and recorded (pxed.chunker), so a version with no index
yet still has its file, and one with an index is served from chunks unless
the server keeps whole files.  Chunks are read, decompressed and checked on
the IO pool, 4 MiB at a time, and only while the client keeps reading."""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import static
from twisted.web.iweb import IRequest

from pxed.agent import chunkindex
from pxed.agent.chunkindex import Index
from pxed.chunkstore import ChunkMissing, ChunkStore
from pxed.metrics import Metrics
from pxed.web.static import StaticFiles
from pxed.workers import IOPool

log = Logger()

READ_SIZE = 4 * 1024 * 1024
# Parsed indexes kept (about 36 bytes of index per 64 KiB of image): a rack
# deploying a few versions reads each index once.
INDEXES_KEPT = 8


class ChunkReader:
    """A version's bytes as a file, from its index and the store.  Blocks:
    read_at runs on the IO pool; read (Twisted's multi-range producer) on
    the reactor, for the rare multi-range request."""

    def __init__(self, index: Index, store: ChunkStore) -> None:
        self._index = index
        self._store = store
        self._offsets = index.offsets
        self._pos = 0

    def read_at(self, offset: int, size: int) -> bytes:
        index = self._index
        end = min(offset + size, index.size)
        out = bytearray()
        i = bisect.bisect_right(self._offsets, offset) - 1
        while offset < end:
            start = self._offsets[i]
            length = index.lengths[i]
            data = self._store.read(index.digests[i], length)
            out += data[offset - start : min(end - start, length)]
            offset = start + length
            i += 1
        return bytes(out)

    def seek(self, offset: int, whence: int = 0) -> None:
        self._pos = offset

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = self._index.size - self._pos
        data = self.read_at(self._pos, size)
        self._pos += len(data)
        return data

    def close(self) -> None:
        pass


class ChunkProducer:
    """Writes [offset, offset + size) of a ChunkReader to the request, one
    read on the IO pool at a time, paused while the client is."""

    def __init__(
        self,
        request: IRequest,
        reader: ChunkReader,
        offset: int,
        size: int,
        io: IOPool,
        metrics: Metrics | None,
    ) -> None:
        self._request = request
        self._reader = reader
        self._pos = offset
        self._end = offset + size
        self._io = io
        self._metrics = metrics
        self._paused = False
        self._reading = False
        self._done = False

    def start(self) -> None:
        self._request.registerProducer(self, True)
        self._next()

    def _next(self) -> None:
        if self._done or self._paused or self._reading:
            return
        if self._pos >= self._end:
            self._finish()
            return
        self._reading = True
        n = min(READ_SIZE, self._end - self._pos)
        d: Deferred[bytes] = self._io.run(self._reader.read_at, self._pos, n)
        d.addCallbacks(self._got, self._failed)

    def _got(self, data: bytes) -> None:
        self._reading = False
        if self._done:
            return
        self._pos += len(data)
        self._request.write(data)
        if self._metrics is not None:
            self._metrics.chunk_bytes.labels("served").inc(len(data))
        self._next()

    def _failed(self, failure) -> None:
        self._reading = False
        if self._done:
            return
        if failure.check(ChunkMissing):
            log.error("serving a version from chunks: {why}", why=failure.getErrorMessage())
        else:
            log.failure("serving a version from chunks", failure)
        # Headers and part of the body are out: the only honest end is a
        # cut connection, which the client sees as a short download.
        self._done = True
        self._request.unregisterProducer()
        transport = getattr(self._request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def _finish(self) -> None:
        self._done = True
        self._request.unregisterProducer()
        self._request.finish()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._next()

    def stopProducing(self) -> None:
        self._done = True


class ReadByPOST:
    """POST reads a version too (the original's /latest was POST)."""

    def render_POST(self, request: IRequest):
        return self.render_GET(request)  # type: ignore[attr-defined]


class ChunkedVersion(ReadByPOST, StaticFiles):
    """A version served from its chunks.  Its path is the index's (so a
    version deleted meanwhile is 404 as a removed file would be); its size
    and bytes are the version's."""

    def __init__(
        self,
        index_path: Path,
        index: Index,
        store: ChunkStore,
        io: IOPool,
        metrics: Metrics | None,
        etag: str,
    ) -> None:
        super().__init__(str(index_path), etag=etag)
        self.type = "application/octet-stream"
        self.encoding = None
        self._index = index
        self._store = store
        self._io = io
        self._metrics = metrics

    def getFileSize(self) -> int:
        return self._index.size

    def openForReading(self) -> ChunkReader:
        return ChunkReader(self._index, self._store)

    def makeProducer(self, request: IRequest, fileForReading: ChunkReader):
        request.download = True
        producer = static.File.makeProducer(self, request, fileForReading)
        if isinstance(producer, static.SingleRangeStaticProducer):
            return ChunkProducer(
                request, fileForReading, producer.offset, producer.size, self._io, self._metrics
            )
        if isinstance(producer, static.NoRangeStaticProducer):
            return ChunkProducer(
                request, fileForReading, 0, self._index.size, self._io, self._metrics
            )
        return producer  # several ranges: rare; read on the reactor


class WholeVersion(ReadByPOST, StaticFiles):
    """A version's whole file."""


class Downloads:
    """Which resource serves a version: see the module's doc."""

    def __init__(
        self,
        file_path,
        store: ChunkStore | None,
        io: IOPool,
        metrics: Metrics | None = None,
        keep_whole_files: bool = True,
    ) -> None:
        self._file_path = file_path
        self._store = store
        self._io = io
        self._metrics = metrics
        self._keep_whole = keep_whole_files
        self._indexes: OrderedDict[Path, Index] = OrderedDict()

    async def resource(self, image_uuid: str, file: str, etag: str):
        path = self._file_path(image_uuid, file)
        if self._store is not None:
            index_path = self._store.index_path(image_uuid, file)
            # A stat each, on the reactor: no await between this look and
            # the answer's start unless the index is to be used.
            if os.path.isfile(index_path) and not (self._keep_whole and os.path.isfile(path)):
                index = await self._index(index_path)
                return ChunkedVersion(index_path, index, self._store, self._io, self._metrics, etag)
        return WholeVersion(str(path), etag=etag)

    def index(self, image_uuid: str, file: str) -> StaticFiles | None:
        """The version's index file as it is stored, or None without one."""
        if self._store is None:
            return None
        if not self._store.has_index(image_uuid, file):
            return None
        return StaticFiles(str(self._store.index_path(image_uuid, file)), etag=None)

    async def _index(self, path: Path) -> Index:
        # A version file's name is never reused, so neither is its index's:
        # a kept index is never stale.
        index = self._indexes.get(path)
        if index is not None:
            self._indexes.move_to_end(path)
            return index
        index = await self._io.run(chunkindex.read, path)
        self._indexes[path] = index
        while len(self._indexes) > INDEXES_KEPT:
            self._indexes.popitem(last=False)
        return index
