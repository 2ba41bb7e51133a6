"""Image setups: named, owned lists of images frozen at a version."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa

from pxed.agent.wire import DiskHints
from pxed.db import events
from pxed.db import images as images_db
from pxed.db import users as users_db
from pxed.db.errors import InvalidError, NotFoundError, NotPermittedError
from pxed.db.images import Image, new_uuid
from pxed.db.schema import image_setups, image_versions, images, setup_images, utcnow


@dataclass(frozen=True)
class Entry:
    image_uuid: str
    version: int
    update: bool
    hints: DiskHints | None = None


@dataclass(frozen=True)
class Wanted:
    """An entry as a request gives it: no version means the latest."""

    image_uuid: str
    version: int | None = None
    update: bool = False
    hints: DiskHints | None = None


def hints_column(hints: DiskHints | None) -> str | None:
    return None if hints is None else json.dumps(hints.to_json(), sort_keys=True)


def hints_of(text: str | None) -> DiskHints | None:
    return None if text is None else DiskHints.from_json(json.loads(text))


@dataclass(frozen=True)
class Setup:
    uuid: str
    name: str
    owner: str
    created_at: dt.datetime
    entries: tuple[Entry, ...]
    # Each entry's image by UUID, loaded with the setup (in the same
    # transaction): the original's ImageSetup shows every ImageFrozen's
    # Image in full.
    models: Mapping[str, Image] = field(default_factory=dict)

    def image(self, image_uuid: str) -> Image:
        return self.models[image_uuid]


def _load(conn: sa.Connection, where: sa.ColumnElement[bool]) -> list[Setup]:
    columns = (
        *(c for c in image_setups.c if c.name != "owner_id"),
        users_db.owner_name(image_setups.c.owner_id).label("owner"),
    )
    rows = conn.execute(sa.select(*columns).where(where).order_by(image_setups.c.created_at)).all()
    entries: dict[str, list[Entry]] = {r.uuid: [] for r in rows}
    if rows:
        for e in conn.execute(
            sa.select(setup_images)
            .where(setup_images.c.setup_uuid.in_(list(entries)))
            .order_by(setup_images.c.position)
        ):
            entries[e.setup_uuid].append(
                Entry(e.image_uuid, e.version, e.update, hints_of(e.disk_hints))
            )
    models = images_db.load_by_uuid(conn, (e.image_uuid for es in entries.values() for e in es))
    return [Setup(**r._mapping, entries=tuple(entries[r.uuid]), models=models) for r in rows]


def thd_get(conn: sa.Connection, setup_uuid: str) -> Setup | None:
    found = _load(conn, image_setups.c.uuid == setup_uuid)
    return found[0] if found else None


def get_owned(conn: sa.Connection, owner: str, setup_uuid: str) -> Setup:
    setup = thd_get(conn, setup_uuid)
    if setup is None or setup.owner != owner:
        raise NotFoundError(f"user {owner!r} has no image setup {setup_uuid}")
    return setup


def thd_list(conn: sa.Connection, owner: str, name: str | None = None) -> list[Setup]:
    where = image_setups.c.owner_id == users_db.id_of(conn, owner)
    if name is not None:
        where = sa.and_(where, image_setups.c.name == name)
    return _load(conn, where)


def _check_entry(conn: sa.Connection, owner: str, staff: bool, entry: Entry) -> None:
    """Only existing versions of images the setup's owner may use."""
    image = conn.execute(
        sa.select(users_db.owner_name(images.c.owner_id).label("owner"), images.c.type).where(
            images.c.uuid == entry.image_uuid
        )
    ).first()
    if image is None:
        raise InvalidError(f"UUID: no image {entry.image_uuid}")
    if image.owner != owner and not staff:
        raise NotPermittedError(f"image {entry.image_uuid} belongs to someone else")
    if image.type == "machine":
        raise InvalidError("UUID: machine images are handled by the management OS itself")
    exists = conn.execute(
        sa.select(image_versions.c.version).where(
            image_versions.c.image_uuid == entry.image_uuid,
            image_versions.c.version == entry.version,
        )
    ).first()
    if exists is None:
        raise InvalidError(f"Version: image {entry.image_uuid} has no version {entry.version}")


def latest_version(conn: sa.Connection, image_uuid: str) -> int:
    latest = conn.execute(
        sa.select(sa.func.max(image_versions.c.version)).where(
            image_versions.c.image_uuid == image_uuid
        )
    ).scalar()
    if latest is None:
        raise InvalidError(f"UUID: no image {image_uuid} with versions")
    return latest


def resolve(conn: sa.Connection, wanted: Wanted) -> Entry:
    """An entry; no version means the latest, frozen now."""
    version = wanted.version
    if version is None:
        version = latest_version(conn, wanted.image_uuid)
    return Entry(wanted.image_uuid, version, wanted.update, wanted.hints)


def thd_create(
    conn: sa.Connection,
    owner: str,
    name: str,
    entries: list[Wanted],
    staff: bool,
    actor: str,
) -> Setup:
    # Staff may create setups for others, but only for users that exist.
    owner_id = users_db.thd_id(conn, owner)
    setup_uuid = new_uuid()
    conn.execute(
        image_setups.insert().values(
            uuid=setup_uuid, name=name, owner_id=owner_id, created_at=utcnow()
        )
    )
    _replace_entries(conn, setup_uuid, owner, staff, entries)
    events.thd_record(conn, actor, "setup.create", "setup", setup_uuid, f"name={name}")
    setup = thd_get(conn, setup_uuid)
    assert setup is not None
    return setup


def _replace_entries(conn, setup_uuid, owner, staff, entries) -> None:
    conn.execute(setup_images.delete().where(setup_images.c.setup_uuid == setup_uuid))
    seen: set[str] = set()
    for position, wanted in enumerate(entries):
        if wanted.image_uuid in seen:
            raise InvalidError(f"UUID: image {wanted.image_uuid} is listed twice")
        seen.add(wanted.image_uuid)
        entry = resolve(conn, wanted)
        _check_entry(conn, owner, staff, entry)
        conn.execute(
            setup_images.insert().values(
                setup_uuid=setup_uuid,
                image_uuid=entry.image_uuid,
                version=entry.version,
                update=entry.update,
                position=position,
                disk_hints=hints_column(entry.hints),
            )
        )


def thd_update(
    conn: sa.Connection,
    owner: str,
    setup_uuid: str,
    name: str | None,
    entries: list[Wanted] | None,
    staff: bool,
    actor: str,
) -> Setup:
    get_owned(conn, owner, setup_uuid)
    if name is not None:
        conn.execute(
            image_setups.update().where(image_setups.c.uuid == setup_uuid).values(name=name)
        )
    if entries is not None:
        _replace_entries(conn, setup_uuid, owner, staff, entries)
    events.thd_record(
        conn,
        actor,
        "setup.update",
        "setup",
        setup_uuid,
        f"name={name}" if name is not None else "images",
    )
    return get_owned(conn, owner, setup_uuid)


def thd_add_entry(
    conn: sa.Connection,
    owner: str,
    setup_uuid: str,
    wanted: Wanted,
    staff: bool,
    actor: str,
) -> Setup:
    setup = get_owned(conn, owner, setup_uuid)
    entry = resolve(conn, wanted)
    image_uuid = entry.image_uuid
    _check_entry(conn, owner, staff, entry)
    existing = [e for e in setup.entries if e.image_uuid == image_uuid]
    if existing:
        conn.execute(
            setup_images.update()
            .where(
                setup_images.c.setup_uuid == setup_uuid,
                setup_images.c.image_uuid == image_uuid,
            )
            .values(
                version=entry.version, update=entry.update, disk_hints=hints_column(entry.hints)
            )
        )
    else:
        conn.execute(
            setup_images.insert().values(
                setup_uuid=setup_uuid,
                image_uuid=image_uuid,
                version=entry.version,
                update=entry.update,
                disk_hints=hints_column(entry.hints),
                # After the last one: removals leave gaps, so not the count.
                position=conn.execute(
                    sa.select(sa.func.coalesce(sa.func.max(setup_images.c.position) + 1, 0)).where(
                        setup_images.c.setup_uuid == setup_uuid
                    )
                ).scalar(),
            )
        )
    events.thd_record(
        conn,
        actor,
        "setup.image.add",
        "setup",
        setup_uuid,
        f"image={image_uuid} version={entry.version} update={entry.update}",
    )
    return get_owned(conn, owner, setup_uuid)


def thd_remove_entry(
    conn: sa.Connection, owner: str, setup_uuid: str, image_uuid: str, actor: str
) -> Setup:
    get_owned(conn, owner, setup_uuid)
    removed = conn.execute(
        setup_images.delete().where(
            setup_images.c.setup_uuid == setup_uuid,
            setup_images.c.image_uuid == image_uuid,
        )
    ).rowcount
    if not removed:
        raise NotFoundError(f"image {image_uuid} is not in setup {setup_uuid}")
    events.thd_record(conn, actor, "setup.image.remove", "setup", setup_uuid, f"image={image_uuid}")
    return get_owned(conn, owner, setup_uuid)


def thd_delete(conn: sa.Connection, owner: str, setup_uuid: str, actor: str) -> None:
    get_owned(conn, owner, setup_uuid)
    users_db.clear_lease_setup(conn, image_setups.c.uuid == setup_uuid)
    conn.execute(image_setups.delete().where(image_setups.c.uuid == setup_uuid))
    events.thd_record(conn, actor, "setup.delete", "setup", setup_uuid)
