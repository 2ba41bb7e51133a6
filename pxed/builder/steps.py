"""The blocking steps of a build, run on the Docker engine's pool: the
build context, ``docker build`` with its log streamed line by line, the
export of the root filesystem, the disk, initramfs or tar made from it in
staging, and the removal of what the build left in the engine.

`BuildWorker` (worker.py) queues builds and records their outcome on the
reactor; everything here blocks and reports through the ``say`` callback,
which must be safe to call from a pool thread."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.logger import Logger

from pxed.builder import disk
from pxed.builder.engine import LABEL
from pxed.config import Config
from pxed.db.builds import Build
from pxed.storage import Staged, Storage, compress, file_digest

if TYPE_CHECKING:
    from docker import APIClient

log = Logger()

COPY = 1024 * 1024
# Takes one line of the build log; called on the pool thread.
Say = Callable[[str], None]


class BuildFailed(Exception):
    """The build failed for a reason its log explains."""


class Cancelled(Exception):
    """The build was cancelled or timed out; `Job.reason` says which."""


@dataclass
class Job:
    """A running build: shared by its pool thread and the reactor."""

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


def kill(api: APIClient, container: str) -> None:
    """Kill a RUN step's container: the build stream ends at once."""
    api.kill(container)


def _build_context(job: Job) -> Path:
    """A tar of the build context: the uploaded archive's members (if any)
    with the Dockerfile put in, written member by member."""
    out = job.work / "build-context.tar"
    dockerfile = job.build.dockerfile.encode()
    given = job.work / "context"
    if job.build.has_context and not given.exists():
        # Taken over from a server that stopped before it stored the context.
        raise BuildFailed("the build context was lost: the server that accepted it stopped")
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


def run_build(
    api: APIClient, job: Job, storage: Storage, config: Config, say: Say
) -> tuple[Staged, dict]:
    """Build, export and assemble *job*: the result in staging and how long
    each step took."""
    import docker  # on first use only, as in engine.py

    try:
        return _build_steps(api, job, storage, config, say)
    except docker.errors.APIError as e:
        # The engine refused (a Dockerfile it cannot parse, say): the
        # user's to fix, with the engine's words.
        raise BuildFailed(str(e.explanation or e).strip()) from None


def _build_steps(
    api: APIClient, job: Job, storage: Storage, config: Config, say: Say
) -> tuple[Staged, dict]:
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
                # Hashed as it is written: no second read of the result.
                size, sha256 = compress(staged, packed, job.compression)
            except BaseException:
                packed.unlink(missing_ok=True)
                raise
            staged.unlink()
            staged = packed
            say(f"pxed: compressed with {job.compression}")
        else:
            size, sha256 = file_digest(staged)
        with open(staged, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    timings["assemble"] = time.monotonic() - started
    return Staged(staged, size, sha256), timings


def _docker_build(api: APIClient, job: Job, context: Path, say: Say) -> str:
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


def cleanup(api: APIClient, job: Job) -> None:
    """Remove every container and image *job* made (best effort per item)."""
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
    remove_labelled(api, job.build.id)


def remove_labelled(api: APIClient, build_id: int | None) -> None:
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
