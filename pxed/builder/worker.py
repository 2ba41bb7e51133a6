"""The build worker: a FIFO queue of builds in the database, run at most
``build_concurrency`` at a time, each on the Docker engine's pool, its log
stored line by line as it arrives, its result committed like an upload."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from pxed.builder import disk
from pxed.builder.engine import LABEL, DockerEngine, EngineUnavailable
from pxed.config import Config
from pxed.db import builds, images
from pxed.db.builds import Build
from pxed.db.pool import DBPool
from pxed.errors import ServiceUnavailable
from pxed.storage import Staged, Storage, compress, file_digest
from pxed.workers import IOPool

log = Logger()

COPY = 1024 * 1024


class BuildFailed(Exception):
    """The build failed for a reason its log explains."""


class Cancelled(Exception):
    pass


@dataclass
class Job:
    build: Build
    work: Path
    cancelled: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    # Written by the build thread, read by cancel() on the reactor thread.
    step_container: str | None = None
    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    # The image's DiskCompressionStrategy: disks and tars are stored so.
    compression: str = "none"


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
    ) -> None:
        self._config = config
        self._db = db
        self._engine = engine
        self._io = io
        self._storage = storage
        self._reactor = reactor
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

    def _after_restart(self, failed: list[int]) -> None:
        for build_id in failed:
            shutil.rmtree(self.dir / str(build_id), ignore_errors=True)
        if failed:
            log.warn("failed {n} build(s) left unfinished by the last run", n=len(failed))
            # Whatever those builds left in the engine goes too (best effort:
            # the engine may be down).
            d = self._engine.run(_remove_labelled, None)
            d.addErrback(lambda f: log.info("engine cleanup skipped: {e}", e=f.getErrorMessage()))
        self.kick()

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
            d = self._engine.run(_kill, container)
            d.addErrback(lambda f: None)

    async def _run(self, job: Job) -> None:
        build = job.build
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
                _build, job, self._storage, self._config, self._line_sink(build.id)
            )
            if job.cancelled.is_set():
                raise Cancelled()
            version = await self._db.run(
                images.thd_commit_version,
                self._storage,
                build.image_uuid,
                staged,
                "build",
                False,
                f"build:{build.id}",
            )
            await self._io.run(_keep_dockerfile, self._storage, build, version.version)
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
        except Cancelled:
            self._log(build.id, f"pxed: {job.reason}")
            await self._db.run(
                builds.thd_finish,
                build.id,
                builds.FAILED if job.reason.startswith("timed out") else builds.CANCELLED,
                job.reason,
            )
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
            if timer.active():
                timer.cancel()
            try:
                await self._engine.run(_cleanup, job)
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

    def _line_sink(self, build_id: int):
        def sink(line: str) -> None:
            self._reactor.callFromThread(self._log, build_id, line)

        return sink


# -- blocking work, on the engine's or the IO pool's threads -----------------


def _prepare_work(work: Path, context: Path | None) -> None:
    work.mkdir(parents=True, exist_ok=True)
    if context is not None:
        shutil.move(context, work / "context")


def _keep_dockerfile(storage: Storage, build: Build, version: int) -> None:
    storage.path(build.image_uuid, version).with_suffix(".Dockerfile").write_text(build.dockerfile)


def _kill(api, container: str) -> None:
    api.kill(container)


def _build_context(job: Job) -> Path:
    """A tar of the build context: the uploaded archive's members (if any)
    with the Dockerfile put in, written member by member."""
    out = job.work / "build-context.tar"
    dockerfile = job.build.dockerfile.encode()
    given = job.work / "context"
    with tarfile.open(out, "w") as tar:
        if given.exists():
            try:
                with tarfile.open(given, "r:*") as src:
                    for member in src:
                        name = member.name.lstrip("./")
                        if name == "Dockerfile":
                            continue
                        if member.isfile():
                            tar.addfile(member, src.extractfile(member))
                        else:
                            tar.addfile(member)
            except tarfile.TarError as e:
                raise BuildFailed(
                    f"the build context is not a tar or tar.gz archive: {e}"
                ) from None
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(dockerfile))
    return out


def _build(api, job: Job, storage: Storage, config: Config, say) -> tuple[Staged, dict]:
    import docker  # on first use only, as in engine.py

    try:
        return _build_steps(api, job, storage, config, say)
    except docker.errors.APIError as e:
        # The engine refused (a Dockerfile it cannot parse, say): the
        # user's to fix, with the engine's words.
        raise BuildFailed(str(e.explanation or e).strip()) from None


def _build_steps(api, job: Job, storage: Storage, config: Config, say) -> tuple[Staged, dict]:
    build = job.build
    timings: dict[str, float] = {}
    job.work.mkdir(parents=True, exist_ok=True)
    context = _build_context(job)
    started = time.monotonic()
    image_id = _docker_build(api, job, context, say)
    timings["build"] = time.monotonic() - started

    started = time.monotonic()
    container = api.create_container(
        image_id, command=["/pxed-export"], labels={LABEL: str(build.id)}, network_disabled=True
    )
    job.containers.append(container["Id"])
    rootfs = job.work / "rootfs.tar"
    with open(rootfs, "wb") as out:
        for chunk in api.export(container["Id"], chunk_size=COPY):
            if job.cancelled.is_set():
                raise Cancelled()
            out.write(chunk)
    timings["export"] = time.monotonic() - started
    stats = disk.rootfs_stats(rootfs)
    if stats.total_bytes == 0:
        # docker export adds empty /.dockerenv, /etc/hosts and the like even
        # to an image with no files of its own.
        raise disk.EmptyRootfs("the image's filesystem is empty: nothing to put on a disk")
    say(
        f"pxed: exported {stats.files} files, {stats.total_bytes} bytes"
        + (f", kernel {stats.kernel}" if stats.kernel else ", no kernel in /boot")
    )

    started = time.monotonic()
    staged, fd = storage.new_staging("build-")
    os.close(fd)
    try:
        if build.format == "tar":
            shutil.copyfile(rootfs, staged)
        elif build.format == "initramfs":
            disk.make_initramfs(rootfs, staged, log=say)
        else:
            layout = disk.make_disk(
                rootfs, staged, job.work, headroom=config.build_headroom_mib * 1024 * 1024, log=say
            )
            say(
                f"pxed: disk of {layout.size} bytes, root PARTUUID {layout.root_partuuid}"
                + (", UEFI bootloader installed" if layout.has_bootloader else "")
            )
        if job.cancelled.is_set():
            raise Cancelled()
        # An initramfs is gzip already, and the kernel loads it as it is.
        if job.compression != "none" and build.format != "initramfs":
            packed, fd = storage.new_staging("build-packed-")
            os.close(fd)
            try:
                compress(staged, packed, job.compression)
            except BaseException:
                packed.unlink(missing_ok=True)
                raise
            staged.unlink()
            staged = packed
            say(f"pxed: compressed with {job.compression}")
        size, sha256 = file_digest(staged)
        with open(staged, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    timings["assemble"] = time.monotonic() - started
    return Staged(staged, size, sha256), timings


def _docker_build(api, job: Job, context: Path, say) -> str:
    """Run the build, logging as it goes; the final image id.  Every image a
    step makes is recorded for removal (nocache: none is shared)."""
    step_is_from = False
    image_id = None
    with open(context, "rb") as f:
        stream = api.build(
            fileobj=f,
            custom_context=True,
            decode=True,
            rm=True,
            forcerm=True,
            nocache=True,
            pull=False,
            network_mode="none",
            labels={LABEL: str(job.build.id)},
            tag=f"pxed-build-{job.build.id}:latest",
        )
        try:
            for chunk in stream:
                if job.cancelled.is_set():
                    raise Cancelled()
                if "error" in chunk:
                    raise BuildFailed(str(chunk["error"]).strip())
                if "aux" in chunk and isinstance(chunk["aux"], dict):
                    image_id = chunk["aux"].get("ID", image_id)
                text = chunk.get("stream")
                if not text:
                    continue
                for line in text.splitlines():
                    stripped = line.strip()
                    if not stripped:
                        continue
                    say(line.rstrip())
                    if stripped.startswith("Step "):
                        step_is_from = stripped.split(":", 1)[-1].strip().upper().startswith("FROM")
                    elif stripped.startswith("---> Running in "):
                        job.step_container = stripped.rsplit(" ", 1)[-1]
                        job.containers.append(job.step_container)
                    elif stripped.startswith("---> ") and not stripped.startswith(
                        "---> Using cache"
                    ):
                        job.step_container = None
                        if not step_is_from:
                            job.images.append(stripped.split()[-1])
        finally:
            stream.close()
    if job.cancelled.is_set():
        raise Cancelled()
    if image_id is None:
        raise BuildFailed("the build produced no image")
    job.images.append(image_id)
    return image_id


def _cleanup(api, job: Job) -> None:
    import docker

    for container in reversed(job.containers):
        try:
            api.remove_container(container, force=True)
        except docker.errors.NotFound:
            pass
    for image in reversed(job.images):
        try:
            api.remove_image(image, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            log.info("image {image} stays: {e}", image=image, e=e.explanation)
    _remove_labelled(api, job.build.id)


def _remove_labelled(api, build_id: int | None) -> None:
    """Remove containers and images carrying the build label (of one build,
    or of any when *build_id* is None)."""
    import docker

    label = LABEL if build_id is None else f"{LABEL}={build_id}"
    for c in api.containers(all=True, filters={"label": label}):
        try:
            api.remove_container(c["Id"], force=True)
        except docker.errors.NotFound:
            pass
    for i in api.images(all=True, filters={"label": label}):
        try:
            api.remove_image(i["Id"], force=True)
        except docker.errors.NotFound:
            pass


def timings_of(build: Build) -> dict:
    return json.loads(build.timings or "{}")
