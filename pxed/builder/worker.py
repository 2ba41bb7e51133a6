"""The build worker: a FIFO queue of builds in the database, run at most
``build_concurrency`` at a time, each on the Docker engine's pool, its log
stored line by line as it arrives, its result committed like an upload.

Several servers may share the database: a build belongs to the server that
accepted it, which renews its lease (``heartbeat_at``) every quarter of
``build_lease``.  Every server looks for builds whose lease lapsed, at start
and as often: a queued one it takes over, a running one it fails with the
reason (its container and partial export were the stopped server's).  A
cancel made on another server reaches the running build at its next
renewal."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from pxed.builder import disk
from pxed.builder.engine import DockerEngine, EngineUnavailable
from pxed.builder.steps import (
    BuildFailed,
    Cancelled,
    Job,
    Say,
    cleanup,
    kill,
    remove_labelled,
    run_build,
)
from pxed.config import Config
from pxed.db import builds, images
from pxed.db.builds import Build
from pxed.db.pool import DBPool, is_busy
from pxed.errors import ServiceUnavailable
from pxed.imagestore import ImageStore
from pxed.metrics import Metrics
from pxed.storage import Staged, Storage
from pxed.workers import IOPool

log = Logger()


class BuildWorker(Service):
    name = "builder"

    def __init__(
        self,
        config: Config,
        db: DBPool,
        engine: DockerEngine,
        io: IOPool,
        store: ImageStore,
        reactor,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._db = db
        self._engine = engine
        self._io = io
        # The server's own: its versions are committed as an upload's are.
        self._store = store
        self._storage = store.storage
        self._reactor = reactor
        self._metrics = metrics if metrics is not None else Metrics()
        self.dir = Path(config.data_dir) / "builds"
        self.jobs: dict[int, Job] = {}
        self._seq: dict[int, int] = {}
        self._filling = False
        self._running: set[Deferred] = set()
        self._server = config.server
        self._lease = LoopingCall(self._renew)
        self._lease.clock = reactor

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.dir.mkdir(parents=True, exist_ok=True)
        d = Deferred.fromCoroutine(self._restart())
        d.addErrback(lambda f: log.failure("failing unfinished builds", f))
        # Then the first renewal and scan (now), and one every quarter lease.
        d.addBoth(lambda _: self._start_lease())

    async def _restart(self) -> None:
        failed = await self._db.run(
            builds.thd_fail_unfinished, self._server, "pxed stopped while the build was running"
        )
        await self._forget(failed, "left unfinished by the last run")

    def _start_lease(self) -> None:
        if self.running:
            d = self._lease.start(self._config.build_lease / 4, now=True)
            d.addErrback(lambda f: log.failure("build lease renewal stopped", f))

    async def _forget(self, failed: list[int], why: str) -> None:
        """Remove what failed builds left: their containers and images in
        the engine (best effort: the engine may be down, or not the one they
        ran on) and their work directories, on the IO pool (they may hold
        multi-GiB exports)."""
        if not failed:
            return
        log.warn("failed {n} build(s) {why}: {ids}", n=len(failed), why=why, ids=failed)
        for build_id in failed:
            try:
                await self._engine.run(remove_labelled, build_id)
            except Exception as e:
                log.info("engine cleanup of build {id} skipped: {e}", id=build_id, e=e)
        try:
            await self._io.run(_remove_work, [self.dir / str(build_id) for build_id in failed])
        except Exception:
            log.failure("removing failed builds' work")

    def stopService(self) -> Deferred | None:
        super().stopService()
        if self._lease.running:
            self._lease.stop()
        for job in self.jobs.values():
            self._cancel_job(job, "pxed is stopping")
        if not self._running:
            return None
        return DeferredList(list(self._running), consumeErrors=True)

    # -- the lease ------------------------------------------------------------

    def _renew(self) -> Deferred[None]:
        # LoopingCall waits for it: renewals never overlap.
        d = Deferred.fromCoroutine(self._renew_and_scan())
        d.addErrback(_renewal_failed)
        return d

    async def _renew_and_scan(self) -> None:
        """Say this server is alive; stop what ended elsewhere; take over or
        fail what stopped servers left; start what is queued."""
        ended = await self._db.run(builds.thd_heartbeat, self._server, list(self.jobs))
        for build_id, message in ended.items():
            job = self.jobs.get(build_id)
            if job is not None:
                self._cancel_job(job, message or "ended on another server")
        orphans = await self._db.run(builds.thd_reclaim, self._server, self._config.build_lease)
        if orphans.taken:
            log.warn("took over queued build(s) of stopped servers: {ids}", ids=orphans.taken)
        await self._forget(orphans.failed, "whose server stopped")
        self.kick()

    # -- API used by the web layer -------------------------------------------

    async def submit(
        self,
        image_uuid: str,
        owner: str,
        fmt: str,
        dockerfile: str,
        context: Staged | None,
        actor: str,
    ) -> Build:
        try:
            await self._engine.ping()
        except EngineUnavailable as e:
            raise ServiceUnavailable(str(e)) from None
        build = await self._db.run(
            builds.thd_create,
            image_uuid,
            owner,
            fmt,
            dockerfile,
            context is not None,
            actor,
            self._server,
        )
        work = self.dir / str(build.id)
        await self._io.run(_prepare_work, work, context.path if context else None)
        self.kick()
        return build

    async def cancel(self, build_id: int, actor: str) -> Build:
        build, was = await self._db.run(builds.thd_cancel, build_id, actor)
        job = self.jobs.get(build_id)
        if job is not None:
            self._cancel_job(job, f"cancelled by {actor}")
        elif was == builds.QUEUED:
            await self._io.run(shutil.rmtree, self.dir / str(build_id), True)
        # else it runs on another server, which stops it at its next renewal.
        return build

    # -- the queue ------------------------------------------------------------

    def kick(self) -> None:
        if not self._filling and self.running:
            d = Deferred.fromCoroutine(self._fill())
            d.addErrback(lambda f: log.failure("starting queued builds", f))

    async def _fill(self) -> None:
        self._filling = True
        try:
            while len(self.jobs) < self._config.build_concurrency:
                build = await self._db.run(builds.thd_next_queued, self._server)
                if build is None:
                    return
                job = Job(build, self.dir / str(build.id))
                self.jobs[build.id] = job
                d = Deferred.fromCoroutine(self._run(job))
                self._running.add(d)
                d.addBoth(lambda r, d=d: self._running.discard(d))
        finally:
            self._filling = False

    def _cancel_job(self, job: Job, reason: str) -> None:
        if job.cancelled.is_set():
            return
        job.reason = reason
        job.cancelled.set()
        container = job.step_container
        if container is not None:
            # Killing the RUN step's container ends the build stream at once.
            d = self._engine.run(kill, container)
            d.addErrback(lambda f: None)

    async def _run(self, job: Job) -> None:
        build = job.build
        began = time.monotonic()
        # How the build ended, for its duration's label.
        ended = builds.FAILED
        timer = self._reactor.callLater(
            self._config.build_timeout,
            self._cancel_job,
            job,
            f"timed out after {self._config.build_timeout:g} s",
        )
        self._log(
            build.id, f"pxed: build {build.id} of image {build.image_uuid} ({build.format}) started"
        )
        try:
            image = await self._db.run(images.thd_get, build.image_uuid)
            if image is None:
                raise BuildFailed("the image was deleted")
            job.compression = image.compression
            staged, timings = await self._engine.run(
                run_build, job, self._storage, self._config, self._line_sink(build.id)
            )
            if job.cancelled.is_set():
                raise Cancelled()
            version = await self._store.add_version(
                build.image_uuid, staged, "build", False, f"build:{build.id}"
            )
            await self._io.run(_keep_dockerfile, self._storage, build, version.file)
            self._log(
                build.id,
                f"pxed: committed version {version.version} "
                f"({staged.size} bytes, sha256 {staged.sha256})",
            )
            await self._db.run(
                builds.thd_finish,
                build.id,
                builds.SUCCEEDED,
                f"version {version.version}",
                version.version,
                timings,
            )
            ended = builds.SUCCEEDED
        except Cancelled:
            self._log(build.id, f"pxed: {job.reason}")
            if not job.reason.startswith("timed out"):
                ended = builds.CANCELLED
            await self._db.run(builds.thd_finish, build.id, ended, job.reason)
        except (BuildFailed, EngineUnavailable, disk.EmptyRootfs, disk.AssemblyError) as e:
            message = str(e) or type(e).__name__
            if job.cancelled.is_set():
                message = job.reason
            self._log(build.id, f"pxed: build failed: {message}")
            await self._db.run(builds.thd_finish, build.id, builds.FAILED, message)
        except Exception as e:
            log.failure("build {id} crashed", build_id=build.id, id=build.id)
            await self._db.run(
                builds.thd_finish,
                build.id,
                builds.FAILED,
                f"internal error ({type(e).__name__}); see the server log",
            )
        finally:
            self._metrics.build_duration.labels(ended).observe(time.monotonic() - began)
            if timer.active():
                timer.cancel()
            try:
                await self._engine.run(cleanup, job)
            except Exception as e:
                log.warn("cleanup of build {id} in the engine: {e}", id=build.id, e=e)
            await self._io.run(shutil.rmtree, job.work, True)
            del self.jobs[build.id]
            self.kick()

    # -- log lines ------------------------------------------------------------

    def _log(self, build_id: int, line: str) -> None:
        seq = self._seq.get(build_id, 0)
        self._seq[build_id] = seq + 1
        d = self._db.run(builds.thd_append_log, build_id, seq, line)
        d.addErrback(lambda f: log.failure("storing a build log line", f))

    def _line_sink(self, build_id: int) -> Say:
        def sink(line: str) -> None:
            self._reactor.callFromThread(self._log, build_id, line)

        return sink


def _renewal_failed(failure: Failure) -> None:
    # A busy database is tried again at the next renewal, well within the
    # lease; anything else is worth a traceback.
    if is_busy(failure.value):
        log.warn("renewing build leases: the database is busy; trying again")
    else:
        log.failure("renewing build leases", failure)


# -- blocking work on the IO pool's threads (the engine's: steps.py) ---------


def _prepare_work(work: Path, context: Path | None) -> None:
    work.mkdir(parents=True, exist_ok=True)
    if context is not None:
        shutil.move(context, work / "context")


def _remove_work(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _keep_dockerfile(storage: Storage, build: Build, file: str) -> None:
    """Beside the version's file (the name its row records)."""
    storage.path(build.image_uuid, file).with_suffix(".Dockerfile").write_text(build.dockerfile)


def timings_of(build: Build) -> dict:
    return json.loads(build.timings or "{}")
