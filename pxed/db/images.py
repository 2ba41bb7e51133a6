"""Images and their versions."""

from __future__ import annotations

import datetime as dt
import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from pxed.db import events, users
from pxed.db.errors import ConflictError, NotFoundError
from pxed.db.schema import (
    boot_setup_images,
    boot_setups,
    image_setups,
    image_versions,
    images,
    setup_images,
    utcnow,
)

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
    # The name of its file in the image's directory (Storage.path).
    file: str
    # Chunk store figures (ChunkStore.index_version), None until indexed.
    chunks: int | None = None
    chunk_bytes: int | None = None
    shared_bytes: int | None = None


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
    cloud_init: bool = False
    grow: bool = False

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
    cloud_init: bool | None = None
    grow: bool | None = None


def new_uuid() -> str:
    return str(uuidlib.uuid4())


# An image's columns, its owner by name (stored by id).
_COLUMNS = (
    *(c for c in images.c if c.name != "owner_id"),
    users.owner_name(images.c.owner_id).label("owner"),
)


def _load(conn: sa.Connection, where: sa.ColumnElement[bool]) -> list[Image]:
    rows = conn.execute(sa.select(*_COLUMNS).where(where).order_by(images.c.created_at)).all()
    if not rows:
        return []
    versions: dict[str, list[Version]] = {r.uuid: [] for r in rows}
    for v in conn.execute(
        sa.select(image_versions)
        .where(image_versions.c.image_uuid.in_(list(versions)))
        .order_by(image_versions.c.version)
    ):
        versions[v.image_uuid].append(
            Version(
                v.version,
                v.size,
                v.sha256,
                v.origin,
                v.created_at,
                v.file,
                v.chunks,
                v.chunk_bytes,
                v.shared_bytes,
            )
        )
    return [Image(**r._mapping, versions=tuple(versions[r.uuid])) for r in rows]


def load_by_uuid(conn: sa.Connection, uuids: Iterable[str]) -> dict[str, Image]:
    """The images of *uuids* (with their versions) by UUID, in two queries."""
    wanted = sorted(set(uuids))
    if not wanted:
        return {}
    return {i.uuid: i for i in _load(conn, images.c.uuid.in_(wanted))}


def thd_get(conn: sa.Connection, image_uuid: str) -> Image | None:
    found = _load(conn, images.c.uuid == image_uuid)
    return found[0] if found else None


def get_or_404(conn: sa.Connection, image_uuid: str) -> Image:
    image = thd_get(conn, image_uuid)
    if image is None:
        raise NotFoundError(f"no image {image_uuid}")
    return image


def thd_list_by_owner(conn: sa.Connection, owner: str, name: str | None = None) -> list[Image]:
    """The images of the user called *owner* now (none if there is none)."""
    where = images.c.owner_id == users.id_of(conn, owner)
    if name is not None:
        where = sa.and_(where, images.c.name == name)
    return _load(conn, where)


@dataclass(frozen=True)
class VersionFile:
    """A version's file, already in place on disk, to record."""

    image_uuid: str
    version: int
    size: int
    sha256: str
    file: str


def thd_create(
    conn: sa.Connection, owner: str | None, fields: ImageFields, disk: VersionFile, actor: str
) -> Image:
    """Record a new image (the one *disk* names) with *disk* as version 0,
    owned by the user called *owner* (NotFoundError if there is none) or the system."""
    conn.execute(
        images.insert().values(
            uuid=disk.image_uuid,
            name=fields.name,
            owner_id=None if owner is None else users.thd_id(conn, owner),
            type=fields.type or "base",
            disk_uuid=fields.disk_uuid or "",
            compression=fields.compression or "none",
            file_type=fields.file_type or "raw",
            filesystem=fields.filesystem or "raw",
            size=fields.size,
            created_at=utcnow(),
            cloud_init=bool(fields.cloud_init),
            grow=bool(fields.grow),
        )
    )
    insert_version(conn, disk, "created")
    events.thd_record(
        conn, actor, "image.create", "image", disk.image_uuid, f"name={fields.name} owner={owner}"
    )
    return get_or_404(conn, disk.image_uuid)


def insert_version(conn: sa.Connection, disk: VersionFile, origin: str) -> None:
    conn.execute(
        image_versions.insert().values(
            image_uuid=disk.image_uuid,
            version=disk.version,
            size=disk.size,
            sha256=disk.sha256,
            origin=origin,
            created_at=utcnow(),
            file=disk.file,
        )
    )


def _lock(conn: sa.Connection, image_uuid: str) -> int | None:
    """Lock the image row (concurrent writers of one image wait for each
    other) and return its latest version number."""
    locked = conn.execute(
        sa.select(images.c.uuid).where(images.c.uuid == image_uuid).with_for_update()
    ).first()
    if locked is None:
        raise NotFoundError(f"no image {image_uuid}")
    return conn.execute(
        sa.select(sa.func.max(image_versions.c.version)).where(
            image_versions.c.image_uuid == image_uuid
        )
    ).scalar()


def thd_plan_version(
    conn: sa.Connection, image_uuid: str, replace_latest: bool
) -> tuple[int, bool]:
    """The number a version written now gets, and whether it replaces the
    latest (as the original's X-BAAS-NewVersion: false did).  The file is
    put in place after this, outside the database thread; a frozen latest
    version is refused before any byte moves (and again when recording)."""
    latest = _lock(conn, image_uuid)
    if replace_latest and latest is not None:
        _check_mutable(conn, image_uuid, latest)
        return latest, True
    return (0 if latest is None else latest + 1), False


def _check_mutable(
    conn: sa.Connection, image_uuid: str, version: int, deleting: bool = False
) -> None:
    """ConflictError if *version* is frozen: named by a setup or by queued or running
    boot work, which promised those exact bytes."""
    setup = conn.execute(
        sa.select(image_setups.c.name, image_setups.c.uuid)
        .join(setup_images, setup_images.c.setup_uuid == image_setups.c.uuid)
        .where(setup_images.c.image_uuid == image_uuid, setup_images.c.version == version)
        .order_by(image_setups.c.created_at)
        .limit(1)
    ).first()
    if setup is not None:
        raise ConflictError(
            f"version {version} is frozen in setup {setup.name!r} ({setup.uuid}); "
            + ("it cannot be deleted" if deleting else "upload a new version instead")
        )
    if thd_held(conn, image_uuid, version):
        raise ConflictError(
            f"version {version} is held by queued or running boot work; "
            + ("cancel it first" if deleting else "upload a new version instead")
        )


def thd_record_version(
    conn: sa.Connection, disk: VersionFile, origin: str, replaced: bool, actor: str
) -> tuple[Version, str | None]:
    """Record a version whose file is in place (planned by thd_plan_version).
    Returns it and, for a replacement, the file the row named before, which
    the caller removes once this has committed."""
    _lock(conn, disk.image_uuid)
    old_file = None
    if replaced:
        _check_mutable(conn, disk.image_uuid, disk.version)
        where = sa.and_(
            image_versions.c.image_uuid == disk.image_uuid,
            image_versions.c.version == disk.version,
        )
        old_file = conn.execute(sa.select(image_versions.c.file).where(where)).scalar()
        if old_file is None:
            raise NotFoundError(f"image {disk.image_uuid} has no version {disk.version}")
        conn.execute(
            image_versions.update()
            .where(where)
            .values(
                size=disk.size,
                sha256=disk.sha256,
                origin=origin,
                created_at=utcnow(),
                file=disk.file,
                chunks=None,
                chunk_bytes=None,
                shared_bytes=None,
            )
        )
    else:
        insert_version(conn, disk, origin)
    events.thd_record(
        conn,
        actor,
        "image.version.replace" if replaced else "image.version",
        "image",
        disk.image_uuid,
        f"version={disk.version} origin={origin} size={disk.size} sha256={disk.sha256}",
    )
    version = get_or_404(conn, disk.image_uuid).version(disk.version)
    assert version is not None
    return version, old_file


def thd_files(conn: sa.Connection) -> dict[str, set[str]]:
    """Every image's UUID and the files its versions' rows name: what may
    stay under images/ (Storage.sweep removes the rest at startup)."""
    files: dict[str, set[str]] = {
        u: set() for u in conn.execute(sa.select(images.c.uuid)).scalars()
    }
    for row in conn.execute(sa.select(image_versions.c.image_uuid, image_versions.c.file)):
        files.setdefault(row.image_uuid, set()).add(row.file)
    return files


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
        for k, v in (
            ("name", fields.name),
            ("type", fields.type),
            ("disk_uuid", fields.disk_uuid),
            ("cloud_init", fields.cloud_init),
            ("grow", fields.grow),
        )
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
        raise ConflictError("the image is used by queued or running boot work; cancel it first")
    conn.execute(images.delete().where(images.c.uuid == image_uuid))
    events.thd_record(conn, actor, "image.delete", "image", image_uuid, f"name={image.name}")
    return image


@dataclass(frozen=True)
class Unindexed:
    """A version whose file the chunk store has not indexed yet."""

    image_uuid: str
    version: int
    file: str
    sha256: str
    # The file of the version before it, to count what they share.
    parent_file: str | None


def thd_unindexed(conn: sa.Connection, limit: int = 100) -> list[Unindexed]:
    """Versions not indexed yet, oldest first (a parent before its child,
    so the child's shared bytes can be counted)."""
    v = image_versions.alias("v")
    p = image_versions.alias("p")
    parent = (
        sa.select(p.c.file)
        .where(p.c.image_uuid == v.c.image_uuid, p.c.version < v.c.version)
        .order_by(p.c.version.desc())
        .limit(1)
        .scalar_subquery()
    )
    rows = conn.execute(
        sa.select(v.c.image_uuid, v.c.version, v.c.file, v.c.sha256, parent.label("parent"))
        .where(v.c.chunks.is_(None))
        .order_by(v.c.created_at, v.c.version)
        .limit(limit)
    )
    return [Unindexed(r.image_uuid, r.version, r.file, r.sha256, r.parent) for r in rows]


def thd_record_chunks(
    conn: sa.Connection, job: Unindexed, chunks: int, chunk_bytes: int, shared_bytes: int
) -> bool:
    """Record a version's chunk figures, unless it was replaced or deleted
    meanwhile (its row names another file, or none).  Whether it was."""
    done = conn.execute(
        image_versions.update()
        .where(
            image_versions.c.image_uuid == job.image_uuid,
            image_versions.c.version == job.version,
            image_versions.c.file == job.file,
        )
        .values(chunks=chunks, chunk_bytes=chunk_bytes, shared_bytes=shared_bytes)
    )
    return done.rowcount == 1


def thd_delete_version(conn: sa.Connection, image_uuid: str, version: int, actor: str) -> Version:
    """Delete one version (not the image's only one, nor one frozen in a
    setup or held by boot work).  Returns it; its files are the caller's
    to remove once this has committed."""
    latest = _lock(conn, image_uuid)
    image = get_or_404(conn, image_uuid)
    found = image.version(version)
    if found is None or latest is None:
        raise NotFoundError(f"image {image_uuid} has no version {version}")
    if len(image.versions) == 1:
        raise ConflictError("an image's only version stays: delete the image instead")
    _check_mutable(conn, image_uuid, version, deleting=True)
    conn.execute(
        image_versions.delete().where(
            image_versions.c.image_uuid == image_uuid, image_versions.c.version == version
        )
    )
    events.thd_record(
        conn,
        actor,
        "image.version.delete",
        "image",
        image_uuid,
        f"version={version} size={found.size} sha256={found.sha256}",
    )
    return found
