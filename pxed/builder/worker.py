"""The build worker: a FIFO queue of builds in the database, run at most
``build_concurrency`` at a time, each on the Docker engine's pool, its log
stored line by line as it arrives, its result committed like an upload."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

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
from pxed.db.pool import DBPool
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
        storage: Storage,
        reactor,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._db = db
        self._engine = engine
        self._io = io
        self._storage = storage
        self._reactor = reactor
        self._metrics = metrics if metrics is not None else Metrics()
        self.dir = Path(config.data_dir) / "builds"
        self.jobs: dict[int, Job] = {}
        self._seq: dict[int, int] = {}
        self._filling = False
        self._running: set[Deferred] = set()

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.dir.mkdir(parents=True, exist_ok=True)
        d = self._db.run(
            builds.thd_fail_unfinished, "pxed stopped while the build was queued or running"
        )
        d.addCallback(self._after_restart)
        d.addErrback(lambda f: log.failure("failing unfinished builds", f))

    def _after_restart(self, failed: list[int]) -> Deferred[None] | None:
        if not failed:
            self.kick()
            return None
        log.warn("failed {n} build(s) left unfinished by the last run", n=len(failed))
        # Whatever those builds left in the engine goes too (best effort:
        # the engine may be down).
        d = self._engine.run(remove_labelled, None)
        d.addErrback(lambda f: log.info("engine cleanup skipped: {e}", e=f.getErrorMessage()))
        # Their work directories may hold multi-GiB exports: removed on the
        # IO pool, not the reactor, before queued builds start.
        removed = self._io.run(_remove_work, [self.dir / str(build_id) for build_id in failed])
        removed.addErrback(lambda f: log.failure("removing unfinished builds' work", f))
        removed.addCallback(lambda _: self.kick())
        return removed

    def stopService(self) -> Deferred | None:
        super().stopService()
        for job in self.jobs.values():
            self._cancel_job(job, "pxed is stopping")
        if not self._running:
            return None
        return DeferredList(list(self._running), consumeErrors=True)

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
            builds.thd_create, image_uuid, owner, fmt, dockerfile, context is not None, actor
        )
        work = self.dir / str(build.id)
        await self._io.run(_prepare_work, work, context.path if context else None)
        self.kick()
        return build

    async def cancel(self, build_id: int, actor: str) -> Build:
        build = await self._db.run(builds.thd_cancel, build_id, actor)
        job = self.jobs.get(build_id)
        if job is not None:
            self._cancel_job(job, f"cancelled by {actor}")
        else:
            await self._io.run(shutil.rmtree, self.dir / str(build_id), True)
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
                build = await self._db.run(builds.thd_next_queued)
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
            version = await ImageStore(self._db, self._io, self._storage).add_version(
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
