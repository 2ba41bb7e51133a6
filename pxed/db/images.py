"""Images and their versions."""

from __future__ import annotations

import datetime as dt
import uuid as uuidlib
from dataclasses import dataclass

import sqlalchemy as sa

from pxed.db import events
from pxed.db.schema import boot_setup_images, boot_setups, image_versions, images, utcnow
from pxed.errors import Conflict, NotFound
from pxed.storage import Storage

TYPES = ("base", "system", "user", "temporal", "machine")
USER_TYPES = ("base", "system", "user", "temporal")
COMPRESSIONS = ("none", "gzip", "zstd")
FILE_TYPES = ("raw", "qcow2")
FILESYSTEMS = ("raw", "ext4", "fat32")
LIVE_STATES = ("queued", "in-progress")


@dataclass(frozen=True)
class Version:
    version: int
    size: int
    sha256: str
    origin: str
    created_at: dt.datetime


@dataclass(frozen=True)
class Image:
    uuid: str
    name: str
    owner: str | None
    type: str
    disk_uuid: str
    compression: str
    file_type: str
    filesystem: str
    size: int
    created_at: dt.datetime
    versions: tuple[Version, ...]

    @property
    def latest(self) -> Version | None:
        return self.versions[-1] if self.versions else None

    def version(self, number: int) -> Version | None:
        return next((v for v in self.versions if v.version == number), None)


@dataclass(frozen=True)
class ImageFields:
    name: str | None = None
    type: str | None = None
    disk_uuid: str | None = None
    compression: str | None = None
    file_type: str | None = None
    filesystem: str | None = None
    size: int | None = None


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def _load(conn: sa.Connection, where: sa.ColumnElement[bool]) -> list[Image]:
    rows = conn.execute(sa.select(images).where(where).order_by(images.c.created_at)).all()
    if not rows:
        return []
    versions: dict[str, list[Version]] = {r.uuid: [] for r in rows}
    for v in conn.execute(
        sa.select(image_versions)
        .where(image_versions.c.image_uuid.in_(list(versions)))
        .order_by(image_versions.c.version)
    ):
        versions[v.image_uuid].append(Version(v.version, v.size, v.sha256, v.origin, v.created_at))
    return [Image(**r._mapping, versions=tuple(versions[r.uuid])) for r in rows]


def thd_get(conn: sa.Connection, image_uuid: str) -> Image | None:
    found = _load(conn, images.c.uuid == image_uuid)
    return found[0] if found else None


def get_or_404(conn: sa.Connection, image_uuid: str) -> Image:
    image = thd_get(conn, image_uuid)
    if image is None:
        raise NotFound(f"no image {image_uuid}")
    return image


def thd_list_by_owner(conn: sa.Connection, owner: str, name: str | None = None) -> list[Image]:
    where = images.c.owner == owner
    if name is not None:
        where = sa.and_(where, images.c.name == name)
    return _load(conn, where)


def thd_create(
    conn: sa.Connection,
    storage: Storage,
    image_uuid: str,
    owner: str | None,
    fields: ImageFields,
    blank: tuple,
    actor: str,
) -> Image:
    """Record a new image whose version 0 (*blank*: a Staged-like (path,
    size, sha256) in staging) is moved into place first."""
    path, size, sha256 = blank
    conn.execute(
        images.insert().values(
            uuid=image_uuid,
            name=fields.name,
            owner=owner,
            type=fields.type or "base",
            disk_uuid=fields.disk_uuid or "",
            compression=fields.compression or "none",
            file_type=fields.file_type or "raw",
            filesystem=fields.filesystem or "raw",
            size=fields.size,
            created_at=utcnow(),
        )
    )
    _add_version(conn, storage, image_uuid, 0, path, size, sha256, "created")
    events.thd_record(
        conn, actor, "image.create", "image", image_uuid, f"name={fields.name} owner={owner}"
    )
    return get_or_404(conn, image_uuid)


def _add_version(
    conn: sa.Connection,
    storage: Storage,
    image_uuid: str,
    version: int,
    staged_path,
    size: int,
    sha256: str,
    origin: str,
    replace: bool = False,
) -> None:
    final = storage.commit(staged_path, image_uuid, version)
    try:
        values = dict(size=size, sha256=sha256, origin=origin, created_at=utcnow())
        if replace:
            conn.execute(
                image_versions.update()
                .where(
                    image_versions.c.image_uuid == image_uuid, image_versions.c.version == version
                )
                .values(**values)
            )
        else:
            conn.execute(
                image_versions.insert().values(image_uuid=image_uuid, version=version, **values)
            )
    except BaseException:
        if not replace:
            final.unlink(missing_ok=True)
        raise


def thd_commit_version(
    conn: sa.Connection,
    storage: Storage,
    image_uuid: str,
    staged,
    origin: str,
    replace_latest: bool,
    actor: str,
) -> Version:
    """Move a received file into place as the image's next version (or over
    its latest, as the original's X-BAAS-NewVersion: false did) and record
    it.  The image row is locked so concurrent uploads get distinct numbers."""
    locked = conn.execute(
        sa.select(images.c.uuid).where(images.c.uuid == image_uuid).with_for_update()
    ).first()
    if locked is None:
        raise NotFound(f"no image {image_uuid}")
    latest = conn.execute(
        sa.select(sa.func.max(image_versions.c.version)).where(
            image_versions.c.image_uuid == image_uuid
        )
    ).scalar()
    replace = replace_latest and latest is not None
    if replace:
        if thd_held(conn, image_uuid, latest):
            raise Conflict(f"version {latest} is held by queued or running boot work")
        number = latest
    else:
        number = 0 if latest is None else latest + 1
    _add_version(
        conn,
        storage,
        image_uuid,
        number,
        staged.path,
        staged.size,
        staged.sha256,
        origin,
        replace=replace,
    )
    events.thd_record(
        conn,
        actor,
        "image.version.replace" if replace else "image.version",
        "image",
        image_uuid,
        f"version={number} origin={origin} size={staged.size} sha256={staged.sha256}",
    )
    image = get_or_404(conn, image_uuid)
    version = image.version(number)
    assert version is not None
    return version


def thd_held(conn: sa.Connection, image_uuid: str, version: int | None = None) -> bool:
    """Whether queued or in-progress boot work uses the image (that version)."""
    q = (
        sa.select(boot_setup_images.c.version)
        .join(boot_setups, boot_setups.c.id == boot_setup_images.c.boot_setup_id)
        .where(boot_setup_images.c.image_uuid == image_uuid, boot_setups.c.state.in_(LIVE_STATES))
    )
    if version is not None:
        q = q.where(boot_setup_images.c.version == version)
    return conn.execute(q.limit(1)).first() is not None


def thd_update(conn: sa.Connection, image_uuid: str, fields: ImageFields, actor: str) -> Image:
    get_or_404(conn, image_uuid)
    values = {
        k: v
        for k, v in (("name", fields.name), ("type", fields.type), ("disk_uuid", fields.disk_uuid))
        if v is not None
    }
    if values:
        conn.execute(images.update().where(images.c.uuid == image_uuid).values(**values))
        events.thd_record(
            conn,
            actor,
            "image.update",
            "image",
            image_uuid,
            " ".join(f"{k}={v}" for k, v in values.items()),
        )
    return get_or_404(conn, image_uuid)


def thd_delete(conn: sa.Connection, image_uuid: str, actor: str) -> Image:
    image = get_or_404(conn, image_uuid)
    if thd_held(conn, image_uuid):
        raise Conflict("the image is used by queued or running boot work; cancel it first")
    conn.execute(images.delete().where(images.c.uuid == image_uuid))
    events.thd_record(conn, actor, "image.delete", "image", image_uuid, f"name={image.name}")
    return image
