"""Migration 0007 moves ownership from names to user ids and keeps the
data: tokens and sessions survive the rebuild of users, rows of a user
deleted earlier go to the oldest admin and his queued work is cancelled."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from alembic import command

from pxed.db import migrate
from pxed.db.pool import make_engine

T0 = dt.datetime(2026, 1, 1)


@pytest.fixture
def engine(database_url):
    e = make_engine(database_url)
    yield e
    e.dispose()


def insert(conn: sa.Connection, name: str, *rows: dict) -> None:
    conn.execute(sa.Table(name, sa.MetaData(), autoload_with=conn).insert(), list(rows))


def rows(conn: sa.Connection, sql: str) -> list[tuple]:
    return [tuple(r) for r in conn.execute(sa.text(sql))]


def image(uuid: str, owner: str | None) -> dict:
    return dict(uuid=uuid, name=uuid, owner=owner, type="base", size=1, created_at=T0)


def fill_0006(conn: sa.Connection) -> None:
    later = T0 + dt.timedelta(hours=1)
    insert(
        conn,
        "users",
        dict(username="dave", role="user", created_at=later),
        dict(username="root", role="admin", created_at=T0),
    )
    insert(
        conn,
        "api_tokens",
        dict(username="dave", token_hash="a" * 64, prefix="pxu_aaaa", created_at=T0),
    )
    insert(conn, "sessions", dict(id_hash="b" * 64, username="dave", created_at=T0, expires_at=T0))
    insert(conn, "images", image("m-img", None), image("d-img", "dave"), image("g-img", "ghost"))
    insert(
        conn,
        "image_versions",
        *(
            dict(
                image_uuid=u,
                version=0,
                size=1,
                sha256="0" * 64,
                origin="created",
                created_at=T0,
                file="0.img",
            )
            for u in ("d-img", "g-img")
        ),
    )
    insert(
        conn,
        "machines",
        dict(name="m", architecture="x86_64", managed=True, image_uuid="m-img", created_at=T0),
    )
    insert(
        conn,
        "image_setups",
        dict(uuid="d-setup", name="s", owner="dave", created_at=T0),
        dict(uuid="g-setup", name="s", owner="ghost", created_at=T0),
    )
    insert(
        conn,
        "setup_images",
        dict(setup_uuid="d-setup", image_uuid="d-img", version=0, update=False, position=0),
    )
    work = dict(machine_id=1, setup_name="s", update=False, state="queued", created_at=T0)
    insert(
        conn,
        "boot_setups",
        dict(work, id=1, setup_uuid="d-setup", owner="dave"),
        dict(work, id=2, setup_uuid="g-setup", owner="ghost"),
    )
    insert(
        conn,
        "machine_credentials",
        dict(machine_id=1, token_hash="c" * 64, created_at=T0, expires_at=T0, work_id=2),
    )


def test_0007_moves_names_to_ids_and_back(engine):
    migrate.upgrade(engine, "0006")
    with engine.begin() as conn:
        fill_0006(conn)
    migrate.upgrade(engine, "0007")
    with engine.connect() as conn:
        # Ids in order of creation; tokens and sessions kept.
        assert rows(conn, "SELECT id, username FROM users ORDER BY id") == [
            (1, "root"),
            (2, "dave"),
        ]
        assert rows(conn, "SELECT username FROM api_tokens") == [("dave",)]
        assert rows(conn, "SELECT username FROM sessions") == [("dave",)]
        # The vanished user's things went to the oldest admin.
        assert rows(conn, "SELECT uuid, owner_id FROM images ORDER BY uuid") == [
            ("d-img", 2),
            ("g-img", 1),
            ("m-img", None),
        ]
        assert rows(conn, "SELECT uuid, owner_id FROM image_setups ORDER BY uuid") == [
            ("d-setup", 2),
            ("g-setup", 1),
        ]
        assert rows(conn, "SELECT count(*) FROM setup_images") == [(1,)]
        # ... and his queued work never boots.
        assert rows(conn, "SELECT id, owner_id, state FROM boot_setups ORDER BY id") == [
            (1, 2, "queued"),
            (2, 1, "cancelled"),
        ]
        assert rows(conn, "SELECT revoked_at IS NOT NULL FROM machine_credentials") == [(1,)]

    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "0006")
    with engine.connect() as conn:
        assert rows(conn, "SELECT uuid, owner FROM images ORDER BY uuid") == [
            ("d-img", "dave"),
            ("g-img", "root"),
            ("m-img", None),
        ]
        assert rows(conn, "SELECT owner FROM boot_setups ORDER BY id") == [("dave",), ("root",)]
        assert rows(conn, "SELECT username FROM api_tokens") == [("dave",)]
        assert rows(conn, "SELECT count(*) FROM setup_images") == [(1,)]
