"""Indexes committed versions into the chunk store, in the background, and
collects the chunks no version names any more.

A version is committed as a whole file first, exactly as before the chunk
store existed, so an upload, capture or build is no slower for it; this
service then cuts it into chunks (pxed.chunkstore), records what it found
on the version's row, and removes the whole file unless ``keep_whole_files``
(the version is then served from its chunks).  Which versions still need
it is read from the database (``chunks IS NULL``), so a stop or a crash
loses nothing: the next start picks up where this one was.

Collection runs after a version or an image is deleted and every
``chunk_gc_interval`` seconds; while indexing holds the store's lock (here
or on another server sharing the data dir) it tries again a little later."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pxed.chunkstore import ChunkStore, Collected
from pxed.db import images
from pxed.db.images import Unindexed
from pxed.db.pool import DBPool
from pxed.errors import InsufficientStorage
from pxed.metrics import Metrics
from pxed.sparse import Cancelled
from pxed.storage import Storage
from pxed.workers import IOPool, PoolStopped

log = Logger()

# Seconds before a collection that found indexing under way tries again.
COLLECT_RETRY = 5.0


class Chunker(Service):
    name = "chunker"

    def __init__(
        self,
        db: DBPool,
        io: IOPool,
        chunks: ChunkStore,
        storage: Storage,
        reactor,
        metrics: Metrics,
        keep_whole_files: bool = False,
        gc_interval: float = 3600.0,
    ) -> None:
        self._db = db
        self._io = io
        self.chunks = chunks
        self._storage = storage
        self._reactor = reactor
        self._metrics = metrics
        self._keep_whole = keep_whole_files
        self._gc = LoopingCall(self.collect)
        self._gc.clock = reactor
        self._gc_interval = gc_interval
        self._running: Deferred[None] | None = None
        self._again = False
        # Versions that failed this run (their file is gone, say): not
        # tried again until the next start, so one bad row cannot spin.
        self._failed: set[tuple[str, int, str]] = set()
        self._retry = None
        self._collecting: Deferred[Collected | None] | None = None
        self._idle_waiters: list[Deferred[None]] = []

    def startService(self) -> None:
        super().startService()
        self._gc.start(self._gc_interval, now=False)
        self.wake()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._gc.running:
            self._gc.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        return self.idle()

    def idle(self) -> Deferred[None]:
        """Fires once no indexing or collection is under way here (tests;
        stopping)."""
        if self._running is None and self._collecting is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        return d

    def _settled(self) -> None:
        if self._running is None and self._collecting is None:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def wake(self) -> None:
        """A version was committed: index whatever is not indexed yet."""
        if not self.running:
            return
        if self._running is not None:
            self._again = True
            return
        self._running = Deferred.fromCoroutine(self._run())
        self._running.addErrback(lambda f: log.failure("indexing versions", f))
        self._running.addBoth(self._ran)

    def _ran(self, _) -> None:
        self._running = None
        if self._again and self.running:
            self._again = False
            self.wake()
        self._settled()

    async def _run(self) -> None:
        while self.running:
            jobs = [
                j
                for j in await self._db.run(images.thd_unindexed)
                if (j.image_uuid, j.version, j.file) not in self._failed
            ]
            if not jobs:
                return
            for job in jobs:
                if not self.running or not await self._index(job):
                    return

    async def _index(self, job: Unindexed) -> bool:
        """Index one version; False to stop this run (stopping, disk full)."""
        try:
            found = await self._io.run(
                self.chunks.index_version,
                job.image_uuid,
                job.file,
                job.sha256,
                job.parent_file,
                self._io.cancel,
            )
        except (Cancelled, PoolStopped):
            return False
        except InsufficientStorage:
            log.warn(
                "not enough space to index version {version} of image {image} into the "
                "chunk store; it stays a whole file, tried again when a version is next "
                "committed",
                version=job.version,
                image=job.image_uuid,
            )
            return False
        except FileNotFoundError:
            # Replaced or deleted since it was read: nothing to index.
            self._failed.add((job.image_uuid, job.version, job.file))
            return True
        except Exception:
            log.failure(
                "indexing version {version} of image {image}",
                version=job.version,
                image=job.image_uuid,
            )
            self._failed.add((job.image_uuid, job.version, job.file))
            return True
        recorded = await self._db.run(
            images.thd_record_chunks, job, found.chunks, found.unique_bytes, found.shared_bytes
        )
        if not recorded:
            # Its row names another file now (or none): the index just
            # placed describes a file nothing names.
            await self._io.run(self._storage.remove_file, job.image_uuid, job.file)
            self._failed.add((job.image_uuid, job.version, job.file))
            return True
        m = self._metrics
        m.versions_indexed.inc()
        m.chunk_bytes.labels("stored").inc(found.new_bytes)
        m.chunk_bytes.labels("compressed").inc(found.stored_bytes)
        m.chunk_bytes.labels("deduplicated").inc(found.size - found.new_bytes)
        log.info(
            "indexed version {version} of image {image}: {chunks} chunks, "
            "{new} new ({new_bytes} bytes), {shared} bytes shared with its parent",
            version=job.version,
            image=job.image_uuid,
            chunks=found.chunks,
            new=found.new_chunks,
            new_bytes=found.new_bytes,
            shared=found.shared_bytes,
        )
        if not self._keep_whole:
            try:
                await self._io.run(self._storage.drop_whole, job.image_uuid, job.file)
            except OSError as e:
                log.warn("keeping the whole file of {file}: {e}", file=job.file, e=e)
        return True

    def collect(self) -> Deferred[Collected | None]:
        """Remove the chunks no version names; fires with what was done, or
        None if indexing held the store (another try is scheduled)."""
        if self._collecting is not None:
            return self._collecting
        d = self._io.run(self.chunks.collect)
        self._collecting = d
        d.addCallback(self._collected)
        d.addErrback(self._collect_failed)

        def done(result):
            self._collecting = None
            self._settled()
            return result

        d.addBoth(done)
        return d

    def _collected(self, result: Collected | None) -> Collected | None:
        if result is None:
            if self.running and (self._retry is None or not self._retry.active()):
                self._retry = self._reactor.callLater(COLLECT_RETRY, self.collect)
            return None
        self._metrics.chunk_bytes.labels("collected").inc(result.removed_bytes)
        if result.removed:
            log.info(
                "collected {removed} chunks ({bytes} bytes) no version names; {kept} kept",
                removed=result.removed,
                bytes=result.removed_bytes,
                kept=result.kept,
            )
        return result

    def _collect_failed(self, failure) -> None:
        if not failure.check(PoolStopped):
            log.failure("collecting chunks", failure)
        return None
