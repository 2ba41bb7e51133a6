"""The tables, in SQLAlchemy Core.  Migrations under migrations/ must produce
exactly this; tests/db/test_migrations.py holds the two together."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator):
    """Stored as naive UTC (portable across SQLite and PostgreSQL), handed
    out as aware UTC datetimes."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _owner_fk() -> sa.ForeignKey:
    """Ownership is by user id, never by name: a new user who takes a deleted
    user's name gets nothing of his.  No ON DELETE action (SQLite's NO
    ACTION: the delete fails while anything still names him): deleting a
    user hands his things over or removes them first
    (pxed.db.users.thd_delete).  Nullable
    everywhere: SQLite cannot ADD a NOT NULL column with REFERENCES (and
    rebuilding these tables would cascade into the rows referencing them);
    only images have an owner-less kind (the system's), the code always
    sets the others."""
    return sa.ForeignKey("users.id")


images = sa.Table(
    "images",
    metadata,
    sa.Column("uuid", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    # None for images that belong to the system, such as a machine's own image.
    sa.Column("owner_id", sa.Integer, _owner_fk(), nullable=True, index=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("disk_uuid", sa.String(64), nullable=False, server_default=""),
    sa.Column("compression", sa.String(16), nullable=False, server_default="none"),
    sa.Column("file_type", sa.String(16), nullable=False, server_default="raw"),
    sa.Column("filesystem", sa.String(16), nullable=False, server_default="raw"),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # The image boots with cloud-init: its deploys get a NoCloud seed
    # unless the work says otherwise (pxed.seed).
    sa.Column("cloud_init", sa.Boolean, nullable=False, server_default=sa.false()),
    # Deploys grow its last partition and filesystem to the disk.
    sa.Column("grow", sa.Boolean, nullable=False, server_default=sa.false()),
)

machines = sa.Table(
    "machines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("architecture", sa.String(16), nullable=False),
    sa.Column("managed", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(32), nullable=False, server_default="new"),
    sa.Column("last_seen", UTCDateTime, nullable=True),
    sa.Column(
        "image_uuid",
        sa.String(36),
        sa.ForeignKey("images.uuid", ondelete="RESTRICT"),
        nullable=False,
    ),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # What the management OS erases when the machine's next work is another
    # user's (pxed.erase): none, metadata, discard or full.
    sa.Column("erase", sa.String(8), nullable=False, server_default="metadata"),
    # Whose data the disks may hold: the owner of the last work done; null
    # when nobody's is known (a new machine, a failed work of a new user,
    # a deleted user), which counts as another user's.  No ON DELETE (as
    # _owner_fk): pxed.db.users.thd_delete clears it.
    sa.Column("last_user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
    # What pxed does when a lease of the machine ends (pxed.leasekeeper):
    # poweroff, reimage (queue lease_setup_uuid, erasing as the policy
    # says) or none.  No ON DELETE (SQLite does not reflect one added in
    # place): deleting a setup clears it (pxed.db.setups.clear_lease_setup).
    sa.Column("lease_end", sa.String(8), nullable=False, server_default="poweroff"),
    sa.Column("lease_setup_uuid", sa.String(36), sa.ForeignKey("image_setups.uuid"), nullable=True),
)

# How pxed reaches a machine's BMC (one row per machine that has one).  The
# password is stored sealed (AES-GCM with <data-dir>/power.key, see
# pxed/power/secretbox.py); nothing but the power service opens it.
machine_power = sa.Table(
    "machine_power",
    metadata,
    sa.Column(
        "machine_id",
        sa.Integer,
        sa.ForeignKey("machines.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    # redfish, ipmi or none
    sa.Column("driver", sa.String(16), nullable=False),
    # Redfish: the BMC's base URL; IPMI: host[:port]
    sa.Column("address", sa.String(255), nullable=False, server_default=""),
    sa.Column("username", sa.String(255), nullable=False, server_default=""),
    sa.Column("password_sealed", sa.Text, nullable=False, server_default=""),
    # Redfish ComputerSystem id ("" = the only one under /redfish/v1/Systems)
    sa.Column("system", sa.String(255), nullable=False, server_default=""),
    sa.Column("verify_tls", sa.Boolean, nullable=False, server_default=sa.true()),
    # What queueing work does by default (cycle, on, none) and what pxed
    # does once the work is complete (reboot, poweroff, none).
    sa.Column("on_queue", sa.String(8), nullable=False, server_default="none"),
    sa.Column("after", sa.String(16), nullable=False, server_default="none"),
)

machine_macs = sa.Table(
    "machine_macs",
    metadata,
    sa.Column("mac", sa.String(17), primary_key=True),
    sa.Column(
        "machine_id",
        sa.Integer,
        sa.ForeignKey("machines.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    # Keeps the order in which the MACs were given, so answers are stable.
    sa.Column("position", sa.Integer, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    # Username, "machine:<mac>", or "system".
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    # What the event is about, e.g. ("machine", "3") or ("user", "alice").
    sa.Column("target_type", sa.String(32), nullable=False),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    # Repeats of the same event (a boot answer given again) are counted in
    # one row: how many times, and when the last one was.
    sa.Column("count", sa.Integer, nullable=False, server_default="1"),
    sa.Column("last_at", UTCDateTime, nullable=True),
    sa.Index("ix_events_target", "target_type", "target"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(255), nullable=False, server_default=""),
    sa.Column("email", sa.String(255), nullable=False, server_default=""),
    sa.Column("role", sa.String(16), nullable=False),
    # Set once the user has signed in with GitHub; sign-ins match on it.
    sa.Column("github_id", sa.BigInteger, nullable=True, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Secrets are stored as the hex sha256 of the token; the token itself is
# shown once.  They are random 256-bit values, so a plain hash suffices.
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "username",
        sa.String(64),
        sa.ForeignKey("users.username", ondelete="CASCADE", onupdate="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("name", sa.String(255), nullable=False, server_default=""),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column(
        "username",
        sa.String(64),
        sa.ForeignKey("users.username", ondelete="CASCADE", onupdate="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
)

machine_credentials = sa.Table(
    "machine_credentials",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "machine_id",
        sa.Integer,
        sa.ForeignKey("machines.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    # Space-separated image UUIDs the management OS may read or write.
    sa.Column("image_uuids", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    # The work it was minted for (one credential per work item; none under
    # the "always" boot policy without work); it goes with its work.
    sa.Column(
        "work_id",
        sa.Integer,
        sa.ForeignKey("boot_setups.id", ondelete="CASCADE"),
        nullable=True,
        unique=True,
    ),
    # The token is derived again from this and the server's key (it is
    # repeated in boot answers); only its hash is stored.
    sa.Column("nonce", sa.String(64), nullable=True),
    # The client address of the first BootInform: only it may use the token.
    sa.Column("bound_address", sa.String(64), nullable=True),
    sa.Column("bound_at", UTCDateTime, nullable=True),
)

image_versions = sa.Table(
    "image_versions",
    metadata,
    sa.Column(
        "image_uuid",
        sa.String(36),
        sa.ForeignKey("images.uuid", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    # created, upload, capture or build
    sa.Column("origin", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # The file's name in images/<image_uuid>/: "<version>.img", and a new
    # name each time the version is replaced (the old file is removed only
    # after this names the new one).  The default is only for ALTER TABLE.
    sa.Column("file", sa.String(255), nullable=False, server_default=""),
    # Set once the file is indexed into the chunk store (pxed.chunker):
    # its chunks, its distinct chunks' bytes, and the bytes of those its
    # parent (the version before) has too.  NULL again when replaced.
    sa.Column("chunks", sa.BigInteger, nullable=True),
    sa.Column("chunk_bytes", sa.BigInteger, nullable=True),
    sa.Column("shared_bytes", sa.BigInteger, nullable=True),
)

image_setups = sa.Table(
    "image_setups",
    metadata,
    sa.Column("uuid", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("owner_id", sa.Integer, _owner_fk(), nullable=True, index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)


def _frozen_images() -> list[sa.SchemaItem]:
    """An image at one existing version, in a list: the entries of a setup,
    and the snapshot of them a queue entry keeps."""
    return [
        sa.Column("image_uuid", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        # Capture this image back from the machine after use.
        sa.Column("update", sa.Boolean, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        # Root device hints (pxed.agent.wire.DiskHints as JSON): the disk
        # it goes to; null: the position-th disk in kernel name order.
        sa.Column("disk_hints", sa.Text, nullable=True),
        sa.ForeignKeyConstraint(
            ["image_uuid", "version"],
            ["image_versions.image_uuid", "image_versions.version"],
            ondelete="CASCADE",
        ),
    ]


# Frozen entries of a setup: an image at one existing version.
setup_images = sa.Table(
    "setup_images",
    metadata,
    sa.Column(
        "setup_uuid",
        sa.String(36),
        sa.ForeignKey("image_setups.uuid", ondelete="CASCADE"),
        primary_key=True,
    ),
    *_frozen_images(),
)

# The boot queue.  Each entry keeps a snapshot of its setup's images, so
# editing the setup later does not change work already queued.
boot_setups = sa.Table(
    "boot_setups",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "machine_id",
        sa.Integer,
        sa.ForeignKey("machines.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "setup_uuid",
        sa.String(36),
        sa.ForeignKey("image_setups.uuid", ondelete="SET NULL"),
        nullable=True,
    ),
    sa.Column("setup_name", sa.String(255), nullable=False),
    sa.Column("owner_id", sa.Integer, _owner_fk(), nullable=True, index=True),
    sa.Column("update", sa.Boolean, nullable=False),
    # queued -> in-progress -> done | failed; queued -> cancelled
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    # What pxed does with the machine's power once the work is complete:
    # reboot (to disk), poweroff or none.
    sa.Column("after", sa.String(16), nullable=False, server_default="none"),
    # The cloud-init seed: true/false as the queueing asked, null as the
    # images say (any marked cloud_init); the user's user-data for it,
    # read only when the seed is made (never rendered nor logged).
    sa.Column("seed", sa.Boolean, nullable=True),
    sa.Column("user_data", sa.Text, nullable=True),
    # An erase asked for when queued (metadata, discard, full; null: the
    # machine's policy decides), and what was decided when the work was
    # taken: the erase (none ...) and whether the disks held another
    # user's data (then nothing is captured from them).
    sa.Column("erase_asked", sa.String(8), nullable=True),
    sa.Column("erase", sa.String(8), nullable=True),
    sa.Column("erase_reason", sa.String(255), nullable=False, server_default=""),
    sa.Column("new_user", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_boot_setups_machine_state", "machine_id", "state"),
)

boot_setup_images = sa.Table(
    "boot_setup_images",
    metadata,
    sa.Column(
        "boot_setup_id",
        sa.Integer,
        sa.ForeignKey("boot_setups.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    *_frozen_images(),
)

machine_logs = sa.Table(
    "machine_logs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "machine_id",
        sa.Integer,
        sa.ForeignKey("machines.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("origin", sa.String(64), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)

builds = sa.Table(
    "builds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "image_uuid",
        sa.String(36),
        sa.ForeignKey("images.uuid", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("owner_id", sa.Integer, _owner_fk(), nullable=True, index=True),
    # queued -> running -> succeeded | failed; queued | running -> cancelled
    sa.Column("state", sa.String(16), nullable=False, index=True),
    # disk, tar or initramfs
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("dockerfile", sa.Text, nullable=False),
    sa.Column("has_context", sa.Boolean, nullable=False),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("version", sa.Integer, nullable=True),
    # Seconds spent building, exporting and assembling, as JSON.
    sa.Column("timings", sa.Text, nullable=False, server_default="{}"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    # The server that accepted or took over the build (config server_name)
    # and when it last said it is alive: a build whose heartbeat is older
    # than build_lease is another server's to take over or fail.
    sa.Column("server", sa.String(255), nullable=True),
    sa.Column("heartbeat_at", UTCDateTime, nullable=True),
)

build_logs = sa.Table(
    "build_logs",
    metadata,
    sa.Column(
        "build_id",
        sa.Integer,
        sa.ForeignKey("builds.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("line", sa.Text, nullable=False),
)

# What the management OS found on a machine the last time it booted
# (pxed.db.hardware): the whole inventory as JSON, and beside it the
# figures GET /machines filters on.
machine_hardware = sa.Table(
    "machine_hardware",
    metadata,
    sa.Column(
        "machine_id",
        sa.Integer,
        sa.ForeignKey("machines.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seen_at", UTCDateTime, nullable=False),
    # "enlist" or "deploy": which boot of the management OS sent it
    # ("admin": an admin did).
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("arch", sa.String(16), nullable=False),
    sa.Column("cpu_count", sa.Integer, nullable=False),
    sa.Column("memory", sa.BigInteger, nullable=False),
    # The size of its largest disk (0: none), for ?disk_min_size=.
    sa.Column("largest_disk", sa.BigInteger, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
)

# Credentials of unknown machines booted to enlist (pxed.db.enlist): one
# per MAC, able only to register that MAC's inventory.  Like machine
# credentials, the token is derived from the server's key and the nonce.
enlist_credentials = sa.Table(
    "enlist_credentials",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mac", sa.String(17), nullable=False, unique=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("nonce", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

# How far the management OS is with each image of a work item
# (pxed.db.progress).  Not one of the boot view's tables: a report every
# few seconds must not reload it.
work_progress = sa.Table(
    "work_progress",
    metadata,
    sa.Column(
        "work_id",
        sa.Integer,
        sa.ForeignKey("boot_setups.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("image_uuid", sa.String(36), primary_key=True),
    sa.Column("written", sa.BigInteger, nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # When Written reached Total (its "image written" event was recorded).
    sa.Column("done_at", UTCDateTime, nullable=True),
)

# Users' SSH public keys (pxed.db.sshkeys): written into the machines they
# deploy.  Public, so kept as given; one fingerprint once per user.
user_ssh_keys = sa.Table(
    "user_ssh_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("blob", sa.Text, nullable=False),
    sa.Column("comment", sa.String(255), nullable=False, server_default=""),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("bits", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("user_id", "fingerprint"),
)

# Who has a machine from when until when (pxed/db/leases.py).  A lease runs
# over [starts_at, ends_at); ended_at is set once it is over (at its end, or
# released early), warned_at once its holder was told it is ending.  Both
# references cascade: a deleted machine or user takes its leases along.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "machine_id",
        sa.Integer,
        sa.ForeignKey("machines.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column(
        "holder_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("starts_at", UTCDateTime, nullable=False),
    sa.Column("ends_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("warned_at", UTCDateTime, nullable=True),
    # Several machines reserved in one request share it.
    sa.Column("reservation", sa.String(36), nullable=False, index=True),
)
