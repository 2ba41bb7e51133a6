"""Image files and the rows that describe them, kept in step.

The file work (mkfs, fsync, rename, removing trees) runs on the IO pool and
the rows on the database pool, never one inside the other: with SQLite's
one database thread, a multi-GiB fsync inside a transaction would hold up
every query in the server.  The order makes failures safe: a file is put in
place first, under a name no file has, and its row recorded after; if
recording fails the new file is removed, so a row never names a missing
file.  Replacing a version follows the same order: the new bytes get a new
file, the row is changed to name it, and only after that commit is the old
file removed; until then the old version is intact.  A crash between the
steps leaves only files no row names, which ``sweep`` removes at startup."""

from __future__ import annotations

import shutil
import time
import uuid as uuidlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from twisted.logger import Logger

from pxed.db import images, machines
from pxed.db.images import Image, ImageFields, Version, VersionFile
from pxed.db.machines import Machine, MachineFields
from pxed.db.pool import DBPool
from pxed.errors import BadRequest, ServiceUnavailable
from pxed.sparse import Cancelled
from pxed.storage import INDEX_SUFFIX, FormatError, Staged, Storage
from pxed.workers import IOPool, PoolStopped

if TYPE_CHECKING:
    from pxed.chunker import Chunker

log = Logger()

# An hour: longer than any step between placing a file and recording its
# row, which is one short transaction (the bytes were written before).
SWEEP_GRACE = 3600.0


class ImageStore:
    def __init__(
        self, db: DBPool, io: IOPool, storage: Storage, chunker: Chunker | None = None
    ) -> None:
        self._db = db
        self._io = self.io = io
        self.storage = storage
        # Indexes new versions into the chunk store and collects chunks;
        # None without a chunk store (chunk_store = false).
        self.chunker = chunker

    def _added(self) -> None:
        if self.chunker is not None:
            self.chunker.wake()

    def _removed(self) -> None:
        if self.chunker is not None:
            self.chunker.collect()

    async def add_version(
        self, image_uuid: str, staged: Staged, origin: str, replace_latest: bool, actor: str
    ) -> Version:
        """Commit a received file as the image's next version (or over its
        latest) and record it."""
        if staged.size == 0:
            raise BadRequest("the upload is empty: a version needs at least one byte")
        number, replacing = await self._db.run(images.thd_plan_version, image_uuid, replace_latest)
        if replacing:
            file = await self._io.run(self.storage.place_beside, staged.path, image_uuid, number)
        else:
            number, file = await self._io.run(self.storage.place, staged.path, image_uuid, number)
        disk = VersionFile(image_uuid, number, staged.size, staged.sha256, file)
        try:
            version, old_file = await self._db.run(
                images.thd_record_version, disk, origin, replacing, actor
            )
        except BaseException:
            await self._io.run(self.storage.remove_version, image_uuid, file)
            raise
        if old_file is not None and old_file != file:
            try:
                await self._io.run(self.storage.remove_file, image_uuid, old_file)
            except Exception as e:
                # The row names the new file already; the old one is
                # garbage that the next start's sweep removes.
                log.warn(
                    "removing the replaced file {file} of image {image}: {e}",
                    file=old_file,
                    image=image_uuid,
                    e=e,
                )
        self._added()
        return version

    async def delete_version(self, image_uuid: str, number: int, actor: str) -> Version:
        """Delete one version: its row, then its files; the chunks only it
        named go at the collection this starts."""
        version = await self._db.run(images.thd_delete_version, image_uuid, number, actor)
        await self._io.run(self.storage.remove_file, image_uuid, version.file)
        self._removed()
        return version

    async def create_image(
        self, owner: str | None, fields: ImageFields, size: int, actor: str
    ) -> Image:
        """A new image whose version 0 is a blank disk of *size* bytes,
        formatted and compressed as *fields* say."""
        image_uuid = images.new_uuid()
        filesystem = fields.filesystem or "raw"
        async with self._blank(size, filesystem, fields.compression or "none") as blank:
            disk = await self._place_first(image_uuid, blank)
            try:
                image = await self._db.run(images.thd_create, owner, fields, disk, actor)
            except BaseException:
                await self.remove_image(image_uuid)
                raise
        self._added()
        return image

    async def create_machine(
        self, fields: MachineFields, actor: str, update_existing: bool = False
    ) -> tuple[Machine, bool]:
        """A new machine with its private ext4 image (or, with
        *update_existing*, the machine that owns the MACs updated)."""
        image_uuid = images.new_uuid()
        async with self._blank(machines.MACHINE_IMAGE_SIZE, "ext4", "none") as blank:
            disk = await self._place_first(image_uuid, blank)
            created = False
            try:
                if update_existing:
                    machine, created = await self._db.run(machines.thd_upsert, fields, actor, disk)
                else:
                    machine = await self._db.run(machines.thd_create, fields, actor, disk)
                    created = True
            finally:
                if not created:
                    await self.remove_image(image_uuid)
        if created:
            self._added()
        return machine, created

    async def remove_image(self, image_uuid: str) -> None:
        await self._io.run(self.storage.remove_image, image_uuid)
        self._removed()

    async def _place_first(self, image_uuid: str, blank: Staged) -> VersionFile:
        number, file = await self._io.run(self.storage.place, blank.path, image_uuid, 0)
        return VersionFile(image_uuid, number, blank.size, blank.sha256, file)

    @asynccontextmanager
    async def _blank(self, size: int, filesystem: str, compression: str) -> AsyncIterator[Staged]:
        """A formatted disk in staging; whatever was not put in place is
        removed afterwards."""
        try:
            blank = await self._io.run(
                self.storage.make_blank, size, filesystem, compression, self._io.cancel
            )
        except FormatError as e:
            raise BadRequest(f"Filesystem: {e}") from None
        except Cancelled:
            raise ServiceUnavailable("the server is shutting down; try again") from None
        try:
            yield blank
        finally:
            try:
                await self._io.run(self.storage.discard, blank.path)
            except PoolStopped:
                pass  # stopping: the next start empties staging (Storage)


def sweep(engine: sa.Engine, storage: Storage) -> int:
    """Remove what no row names under images/: files of versions whose rows
    were never recorded, replaced files whose removal a crash cut off, and
    the directories of images whose rows are gone.  Run at startup, before
    anything serves (nothing is being put in place then).  Returns how many
    files and directories were removed.

    A database that knows no image at all while image directories exist is
    more likely the wrong database than a crash: nothing is removed then.

    On a database other servers may share (anything but SQLite), a file or
    directory written in the last SWEEP_GRACE seconds stays: another server
    may be between putting it in place and recording its row."""
    grace = 0.0 if engine.dialect.name == "sqlite" else SWEEP_GRACE
    now = time.time()

    def young(path: Path) -> bool:
        try:
            return now - path.lstat().st_mtime < grace
        except FileNotFoundError:
            return True  # gone already

    with engine.connect() as conn:
        files = images.thd_files(conn)
    if not storage.images.is_dir():
        return 0
    # Only what pxed makes: a directory per image, named by its UUID (a
    # lost+found of a mount point, say, stays).
    directories = [d for d in storage.images.iterdir() if d.is_dir() and _is_uuid(d.name)]
    if not files and directories:
        log.warn(
            "the database knows no image but {n} image directories exist under {path}; "
            "not removing any",
            n=len(directories),
            path=str(storage.images),
        )
        return 0
    removed = 0
    for directory in directories:
        known = files.get(directory.name)
        if known is None and young(directory):
            continue
        if known is None:
            log.info("removing {path}: no image has it", path=str(directory))
            storage.remove_image(directory.name)
            removed += 1
            continue
        for entry in directory.iterdir():
            name = entry.name
            if (
                name in known
                or (name.endswith(".Dockerfile") and name[: -len(".Dockerfile")] + ".img" in known)
                or (name.endswith(INDEX_SUFFIX) and name[: -len(INDEX_SUFFIX)] in known)
            ):
                continue
            if young(entry):
                continue
            log.info("removing {path}: no version names it", path=str(entry))
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    return removed


def _is_uuid(name: str) -> bool:
    try:
        return str(uuidlib.UUID(name)) == name
    except ValueError:
        return False
