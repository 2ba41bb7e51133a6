"""Import jobs: ``POST /image/{uuid}/import`` starts one and answers at once;
the job fetches the URL into staging, checks the digest the client gave
against the downloaded bytes, converts to raw what needs it, and commits
the result as the image's next version, like an upload.

A job is known by the id of the ``image.import`` event that started it;
its steps, progress and end are events on the image (``image.import.*``,
their detail starting ``import=<id>``), so they reach the image's owner on
``GET /events/stream``.  At most ``import_concurrency`` jobs run at once,
each on a thread of the importer's own pool (long conversions never hold
up the IO pool uploads use); ``import_queue`` more may wait, and beyond
that a new import is refused with 503.  A job runs at most
``import_timeout`` seconds.  Whatever a job staged is removed whenever it
ends without committing: a refused address, a bad digest, a body too
large, a timeout, a conversion error, pxed stopping.

Jobs live in the server that accepted them: a server that stops fails its
jobs (with the reason, as events) and another does not take them over."""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.logger import Logger

from pxed import sparse
from pxed.config import Config
from pxed.db import events, images
from pxed.db.errors import DomainError
from pxed.db.pool import DBPool
from pxed.errors import ApiError, InsufficientStorage, PayloadTooLarge, ServiceUnavailable
from pxed.imagestore import ImageStore
from pxed.imports import formats
from pxed.imports.addresses import AddressPolicy, Refused
from pxed.imports.fetch import Fetcher, FetchError, shown
from pxed.storage import Staged, Storage
from pxed.web.images import max_image_size
from pxed.workers import PoolStopped, ThreadPoolService

log = Logger()

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

# Seconds between progress events of a download.
PROGRESS_EVERY = 5.0

STARTED = "image.import"
PROGRESS = "image.import.progress"
DONE = "image.import.done"
FAILED = "image.import.failed"


class ImportPool(ThreadPoolService):
    """Downloads' writes, conversions and their hashing."""

    name = "imports-pool"

    def __init__(self, reactor, threads: int) -> None:
        super().__init__(reactor, threads, "pxed-import")


class Stopped(Exception):
    """The job was ended from outside: timed out or pxed stopping."""


@dataclass
class Job:
    id: int
    image_uuid: str
    url: str
    sha256: str | None
    actor: str
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    sink: object | None = None
    staged: list[Path] = field(default_factory=list)

    def stop(self, reason: str) -> None:
        if self.cancel.is_set():
            return
        self.reason = reason
        self.cancel.set()
        if self.sink is not None:
            self.sink.abort(Stopped(reason))  # type: ignore[attr-defined]


class Importer(Service):
    name = "imports"

    def __init__(
        self,
        db: DBPool,
        store: ImageStore,
        pool: ImportPool,
        reactor,
        *,
        concurrency: int,
        queue: int,
        timeout: float,
        max_bytes: int,
        max_image_size: int,
        max_redirects: int,
        policy: AddressPolicy,
    ) -> None:
        self._db = db
        self._store = store
        self._storage: Storage = store.storage
        self._pool = pool
        self._reactor = reactor
        self._slots = DeferredSemaphore(concurrency)
        self._room = concurrency + queue
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._max_image_size = max_image_size
        self._fetcher = Fetcher(reactor, pool, policy, max_redirects)
        self.pool = pool
        self.jobs: dict[int, Job] = {}
        self._running: set[Deferred] = set()

    def stopService(self) -> Deferred | None:
        super().stopService()
        for job in list(self.jobs.values()):
            job.stop("pxed is stopping")
        if not self._running:
            return None
        return DeferredList(list(self._running), consumeErrors=True)

    # -- used by the web layer -------------------------------------------------

    async def start(self, image_uuid: str, url: str, sha256: str | None, actor: str) -> int:
        """Record the import and start it in the background; its id."""
        if not self.running:
            raise ServiceUnavailable("the server is shutting down; try again")
        if len(self.jobs) >= self._room:
            raise TooManyImports(
                f"{len(self.jobs)} imports are running or waiting (import_concurrency, "
                "import_queue); try again later"
            )
        detail = f"url={shown(url)}" + (f" sha256={sha256}" if sha256 else "")
        job_id = await self._db.run(events.thd_record, actor, STARTED, "image", image_uuid, detail)
        job = Job(job_id, image_uuid, url, sha256, actor)
        self.jobs[job_id] = job
        d = Deferred.fromCoroutine(self._run(job))
        self._running.add(d)
        d.addBoth(lambda _: self._running.discard(d))
        return job_id

    async def convert_upload(self, staged: Staged, compression: str) -> tuple[Staged, list[Path]]:
        """An uploaded file in a format pxed converts (qcow2, VMDK, VHDX,
        xz) as what the image stores: the raw disk it holds, compressed as
        the image says.  Anything else is stored as sent (the upload as it
        was, and no files).  Returns what to store and the staging files
        made, the caller's to remove once it is stored; refusals are 4xx
        and leave nothing new behind."""
        fmt = await self._pool.run(formats.detect_file, staged.path)
        if fmt not in formats.CONVERTED:
            return staged, []
        made: list[Path] = []
        try:
            out = await self._stored(fmt, staged, compression, self._pool.cancel, made, "upload-")
        except formats.TooLarge as e:
            await self._discard_all(made)
            raise PayloadTooLarge(f"the {fmt} upload cannot be stored: {e}") from None
        except formats.ConversionError as e:
            await self._discard_all(made)
            raise UnconvertibleUpload(f"the {fmt} upload cannot be converted: {e}") from None
        except (sparse.Cancelled, PoolStopped):
            await self._discard_all(made)
            raise ServiceUnavailable("the server is shutting down; try again") from None
        except OSError as e:
            await self._discard_all(made)
            if e.errno in NO_SPACE:
                raise InsufficientStorage("not enough space on the server for this disk") from None
            raise
        except BaseException:
            await self._discard_all(made)
            raise
        return out, made

    async def _stored(
        self,
        fmt: str,
        staged: Staged,
        compression: str,
        cancel: threading.Event,
        made: list[Path],
        prefix: str,
    ) -> Staged:
        """*staged*, a file in format *fmt*, as an image of *compression*
        stores it: a file in that compression as it is, a qcow2/VMDK/VHDX/xz
        file converted to the raw disk it holds, the raw disk compressed.
        The staging files it makes are added to *made*."""
        if fmt in formats.COMPRESSED:
            if fmt != compression:
                raise ImportRefused(
                    f"the file is {fmt}-compressed but the image's DiskCompressionStrategy is "
                    f"{compression}: import the raw disk, or into a {fmt} image"
                )
            return staged
        raw = staged
        if fmt in formats.CONVERTED:
            out = self._new_staging(f"{prefix}raw-", made)
            size, sha256 = await self._pool.run(
                formats.convert, fmt, staged.path, out, self._max_image_size, cancel
            )
            raw = Staged(out, size, sha256)
        elif staged.size > self._max_image_size:
            raise formats.TooLarge(
                f"the disk is {staged.size} bytes; the limit is {self._max_image_size}"
            )
        if compression == "none":
            return raw
        packed = self._new_staging(f"{prefix}packed-", made)
        size, sha256 = await self._pool.run(sparse.compress, raw.path, packed, compression, cancel)
        if raw is not staged:
            # Not needed any more: the disk is not kept twice in staging.
            made.remove(raw.path)
            await self.discard(raw.path)
        return Staged(packed, size, sha256)

    # -- the job -----------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        try:
            await self._slots.acquire()
        except Exception:
            return
        if job.cancel.is_set():
            # Stopped while it waited for a slot.
            await self._finish(job, FAILED, job.reason)
            del self.jobs[job.id]
            self._slots.release()
            return
        timer = self._reactor.callLater(
            self._timeout, job.stop, f"timed out after {self._timeout:g} s (import_timeout)"
        )
        try:
            detail = await self._import(job)
        except Stopped:
            await self._finish(job, FAILED, job.reason)
        except (FetchError, Refused, formats.ConversionError, ImportRefused, DomainError) as e:
            await self._finish(job, FAILED, job.reason if job.cancel.is_set() else str(e))
        except (sparse.Cancelled, PoolStopped):
            await self._finish(job, FAILED, job.reason or "pxed is stopping")
        except ApiError as e:
            await self._finish(job, FAILED, str(e))
        except Exception as e:
            if job.cancel.is_set():
                await self._finish(job, FAILED, job.reason)
            elif isinstance(e, OSError) and e.errno in NO_SPACE:
                await self._finish(job, FAILED, "not enough space in the data dir for the image")
            else:
                log.failure("import {id} of image {image}", id=job.id, image=job.image_uuid)
                await self._finish(job, FAILED, f"{_reason(e)}; see the server log")
        else:
            await self._finish(job, DONE, detail)
        finally:
            if timer.active():
                timer.cancel()
            await self._discard_all(job.staged)
            del self.jobs[job.id]
            self._slots.release()

    async def _import(self, job: Job) -> str:
        image = await self._db.run(images.thd_get, job.image_uuid)
        if image is None:
            raise ImportRefused("the image was deleted")
        download = self._new_staging("import-", job.staged)
        fd = os.open(download, os.O_WRONLY)
        last = [self._reactor.seconds()]

        def progress(received: int, total: int | None) -> None:
            now = self._reactor.seconds()
            if now - last[0] >= PROGRESS_EVERY:
                last[0] = now
                of = f" of {total}" if total is not None else ""
                self._event(job, PROGRESS, f"downloading {received}{of} bytes")

        def sink_ready(sink: object | None) -> None:
            job.sink = sink
            if sink is not None and job.cancel.is_set():
                sink.abort(Stopped(job.reason))  # type: ignore[attr-defined]

        try:
            size, sha256 = await self._fetcher.fetch(
                job.url, fd, self._max_bytes, progress, sink_ready
            )
            await self._pool.run(os.fsync, fd)
        finally:
            os.close(fd)
        if job.cancel.is_set():
            raise Stopped(job.reason)
        if size == 0:
            raise ImportRefused("the URL's body is empty")
        if job.sha256 is not None and job.sha256 != sha256:
            raise ImportRefused(
                f"sha256 mismatch: expected {job.sha256}, downloaded {sha256}; nothing stored"
            )
        fmt = await self._pool.run(formats.detect_file, download)
        if fmt in formats.CONVERTED:
            self._event(
                job, PROGRESS, f"downloaded {size} bytes (sha256 {sha256}); converting {fmt} to raw"
            )
        fetched = Staged(download, size, sha256)
        staged = await self._stored(
            fmt, fetched, image.compression, job.cancel, job.staged, "import-"
        )
        if job.cancel.is_set():
            raise Stopped(job.reason)
        version = await self._store.add_version(job.image_uuid, staged, "import", False, job.actor)
        return (
            f"version={version.version} format={fmt} downloaded={size} "
            f"size={version.size} sha256={version.sha256}"
        )

    # -- helpers ----------------------------------------------------------------

    def _new_staging(self, prefix: str, made: list[Path]) -> Path:
        path, fd = self._storage.new_staging(prefix)
        os.close(fd)
        made.append(path)
        return path

    async def _discard_all(self, paths: list[Path]) -> None:
        for path in paths:
            await self.discard(path)

    async def discard(self, path: Path) -> None:
        try:
            await self._pool.run(self._storage.discard, path)
        except PoolStopped:
            # The pool has stopped: an unlink, here and now.
            self._storage.discard(path)

    def _event(self, job: Job, action: str, detail: str) -> None:
        d = self._db.run(
            events.thd_record,
            job.actor,
            action,
            "image",
            job.image_uuid,
            f"import={job.id} {detail}",
        )
        d.addErrback(lambda f: log.failure("recording an import event", f))

    async def _finish(self, job: Job, action: str, detail: str) -> None:
        if action == FAILED:
            log.info(
                "import {id} of image {image} failed: {why}",
                id=job.id,
                image=job.image_uuid,
                why=detail,
            )
        try:
            await self._db.run(
                events.thd_record,
                job.actor,
                action,
                "image",
                job.image_uuid,
                f"import={job.id} {detail}",
            )
        except Exception:
            log.failure("recording the end of import {id}", id=job.id)


def make(config: Config, db: DBPool, store: ImageStore, reactor) -> Importer:
    """The importer the settings describe, with its pool (a service the
    caller starts before it)."""
    largest = max_image_size(config.max_image_size, config.data_dir)
    return Importer(
        db,
        store,
        # A thread per running import (a conversion holds one throughout)
        # and one more, so an upload's conversion, a name lookup or a
        # download's writes never wait for a conversion to end.
        ImportPool(reactor, config.import_concurrency + 1),
        reactor,
        concurrency=config.import_concurrency,
        queue=config.import_queue,
        timeout=config.import_timeout,
        max_bytes=config.import_max_bytes or largest,
        max_image_size=largest,
        max_redirects=config.import_max_redirects,
        policy=AddressPolicy(config.import_allow_private, config.import_allow_networks),
    )


def _reason(e: Exception) -> str:
    return f"internal error ({type(e).__name__})"


class ImportRefused(Exception):
    """What was fetched cannot be stored; the message says why."""


class TooManyImports(ServiceUnavailable):
    retry_after = 30


class UnconvertibleUpload(ApiError):
    status = 400
