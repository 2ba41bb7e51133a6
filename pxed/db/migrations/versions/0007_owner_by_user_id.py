"""ownership by user id: users.id; images, setups, work and builds name it

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 14:00:00

users gets an integer primary key (ids in order of creation; username stays
unique, and tokens and sessions keep referencing it).  images, image_setups,
boot_setups and builds get owner_id (REFERENCES users.id) filled from the
owner name, and lose the name.  Rows whose owner name matches no user (left
behind by a user deleted before this revision) go to the oldest admin; such
a user's queued work is cancelled and its credential revoked.

users is rebuilt by hand: dropping it under SQLite's foreign keys would
cascade into api_tokens and sessions, so their rows are kept aside and put
back.  PostgreSQL names constraints schema-wide and will not drop a table
that others reference: there the old table's constraints are renamed out of
the way first, api_tokens' and sessions' foreign keys go with the old table
(DROP ... CASCADE drops the constraints only) and are made again on the new
one, and the new id's sequence gets the name a SERIAL users.id would have.
The other tables only get columns added and dropped (plain ALTER TABLE, no
batch copy: they are referenced with ON DELETE CASCADE).
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OWNED = (
    # table, the old owner column's nullability, its index (if any)
    ("images", True, "ix_images_owner"),
    ("image_setups", False, "ix_image_setups_owner"),
    ("boot_setups", False, None),
    ("builds", False, None),
)


USER_COLUMNS = ("username", "name", "email", "role", "github_id", "created_at")
# Tables whose username references users.username (ON DELETE/UPDATE CASCADE).
BY_USERNAME = ("api_tokens", "sessions")


def _table(name: str, *columns: str) -> sa.TableClause:
    return sa.table(name, *(sa.column(c) for c in columns))


def _rebuild_users(with_id: bool) -> None:
    conn = op.get_bind()
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        # The new table's constraints take these names (and their indexes'):
        # PostgreSQL would refuse them while the old table holds them.
        inspector = sa.inspect(conn)
        taken = [inspector.get_pk_constraint("users")["name"]]
        taken += [uq["name"] for uq in inspector.get_unique_constraints("users")]
        for constraint in taken:
            op.execute(f"ALTER TABLE users RENAME CONSTRAINT {constraint} TO {constraint}_old")
    kept = {}
    for name in BY_USERNAME:
        table = sa.Table(name, sa.MetaData(), autoload_with=conn)
        kept[table] = [dict(r._mapping) for r in conn.execute(sa.select(table))]
    columns = [
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), server_default="", nullable=False),
        sa.Column("email", sa.String(length=255), server_default="", nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("github_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("github_id", name="uq_users_github_id"),
    ]
    if with_id:
        columns = [
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            *columns,
            sa.PrimaryKeyConstraint("id", name="pk_users"),
            sa.UniqueConstraint("username", name="uq_users_username"),
        ]
    else:
        columns.append(sa.PrimaryKeyConstraint("username", name="pk_users"))
    new = op.create_table("_users_new", *columns)
    old = _table("users", *USER_COLUMNS)
    # Ids in order of creation (INTEGER PRIMARY KEY assigns them).
    conn.execute(
        new.insert().from_select(
            USER_COLUMNS, sa.select(old).order_by(old.c.created_at, old.c.username)
        )
    )
    for table in kept:
        conn.execute(table.delete())
    if postgres:
        op.execute("DROP TABLE users CASCADE")
    else:
        op.drop_table("users")
    op.rename_table("_users_new", "users")
    if postgres:
        if with_id:
            op.execute("ALTER SEQUENCE _users_new_id_seq RENAME TO users_id_seq")
        for name in BY_USERNAME:
            op.create_foreign_key(
                f"fk_{name}_username_users",
                name,
                "users",
                ["username"],
                ["username"],
                ondelete="CASCADE",
                onupdate="CASCADE",
            )
    for table, rows in kept.items():
        if rows:
            conn.execute(table.insert(), rows)


def upgrade() -> None:
    _rebuild_users(with_id=True)
    conn = op.get_bind()
    users = _table("users", "id", "username", "role")
    admin = conn.execute(sa.select(sa.func.min(users.c.id)).where(users.c.role == "admin")).scalar()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    # Queued work of an owner who no longer exists never boots.
    work = _table("boot_setups", "id", "owner", "state", "finished_at", "message")
    orphaned = sa.select(work.c.id).where(
        work.c.state == "queued", work.c.owner.not_in(sa.select(users.c.username))
    )
    creds = _table("machine_credentials", "work_id", "revoked_at")
    conn.execute(
        creds.update()
        .where(creds.c.revoked_at.is_(None), creds.c.work_id.in_(orphaned))
        .values(revoked_at=now)
    )
    conn.execute(
        work.update()
        .where(work.c.id.in_(orphaned))
        .values(state="cancelled", finished_at=now, message="its owner no longer exists")
    )
    for name, _, index in OWNED:
        op.execute(
            f"ALTER TABLE {name} ADD COLUMN owner_id INTEGER "
            f"CONSTRAINT fk_{name}_owner_id_users REFERENCES users (id)"
        )
        table = _table(name, "owner", "owner_id")
        by_name = sa.select(users.c.id).where(users.c.username == table.c.owner)
        conn.execute(
            table.update()
            .where(table.c.owner.is_not(None))
            .values(owner_id=sa.func.coalesce(by_name.scalar_subquery(), admin))
        )
        if index is not None:
            op.drop_index(index, table_name=name)
        op.drop_column(name, "owner")
        op.create_index(f"ix_{name}_owner_id", name, ["owner_id"], unique=False)


def downgrade() -> None:
    users = _table("users", "id", "username")
    for name, nullable, index in OWNED:
        op.add_column(
            name,
            sa.Column(
                "owner",
                sa.String(length=64),
                nullable=nullable,
                server_default=None if nullable else "",
            ),
        )
        table = _table(name, "owner", "owner_id")
        by_id = sa.select(users.c.username).where(users.c.id == table.c.owner_id)
        op.get_bind().execute(
            table.update()
            .where(table.c.owner_id.is_not(None))
            .values(owner=by_id.scalar_subquery())
        )
        op.drop_index(f"ix_{name}_owner_id", table_name=name)
        op.drop_column(name, "owner_id")
        if index is not None:
            op.create_index(index, name, ["owner"], unique=False)
    _rebuild_users(with_id=False)
