"""Image files and the rows that describe them, kept in step.

The file work (mkfs, fsync, rename, removing trees) runs on the IO pool and
the rows on the database pool, never one inside the other: with SQLite's
one database thread, a multi-GiB fsync inside a transaction would hold up
every query in the server.  The order makes failures safe: a file is put in
place first and its row recorded after; if recording fails the file is
removed, so a row never names a missing file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pxed.db import images, machines
from pxed.db.images import Image, ImageFields, Version, VersionFile
from pxed.db.machines import Machine, MachineFields
from pxed.db.pool import DBPool
from pxed.errors import BadRequest
from pxed.storage import FormatError, Staged, Storage
from pxed.workers import IOPool


class ImageStore:
    def __init__(self, db: DBPool, io: IOPool, storage: Storage) -> None:
        self._db = db
        self._io = io
        self.storage = storage

    async def add_version(
        self, image_uuid: str, staged: Staged, origin: str, replace_latest: bool, actor: str
    ) -> Version:
        """Commit a received file as the image's next version (or over its
        latest) and record it."""
        number, replacing = await self._db.run(images.thd_plan_version, image_uuid, replace_latest)
        if replacing:
            await self._io.run(self.storage.replace, staged.path, image_uuid, number)
        else:
            number = await self._io.run(self.storage.place, staged.path, image_uuid, number)
        disk = VersionFile(image_uuid, number, staged.size, staged.sha256)
        try:
            return await self._db.run(images.thd_record_version, disk, origin, replacing, actor)
        except BaseException:
            if not replacing:
                await self._io.run(self.storage.remove_version, image_uuid, number)
            raise

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
                return await self._db.run(images.thd_create, owner, fields, disk, actor)
            except BaseException:
                await self.remove_image(image_uuid)
                raise

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
        return machine, created

    async def remove_image(self, image_uuid: str) -> None:
        await self._io.run(self.storage.remove_image, image_uuid)

    async def _place_first(self, image_uuid: str, blank: Staged) -> VersionFile:
        number = await self._io.run(self.storage.place, blank.path, image_uuid, 0)
        return VersionFile(image_uuid, number, blank.size, blank.sha256)

    @asynccontextmanager
    async def _blank(self, size: int, filesystem: str, compression: str) -> AsyncIterator[Staged]:
        """A formatted disk in staging; whatever was not put in place is
        removed afterwards."""
        try:
            blank = await self._io.run(self.storage.make_blank, size, filesystem, compression)
        except FormatError as e:
            raise BadRequest(f"Filesystem: {e}") from None
        try:
            yield blank
        finally:
            await self._io.run(self.storage.discard, blank.path)
