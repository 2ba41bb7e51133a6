"""Configuration: built-in defaults, overridden by a TOML file, overridden by
command-line options.

The dataclasses below are the schema.  Each field's type (with msgspec
``Meta`` constraints where a plain type is not enough) is what a setting is
checked against, and its default is what a missing setting gets; nothing
else lists the settings.  etc/pxed.toml documents every one of them (a test
holds it to that).  Every problem is raised as a ConfigError that names the
setting, so startup can fail with one line instead of a traceback."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints
from urllib.parse import SplitResult, urlsplit

import msgspec
from msgspec import Meta

ARCHITECTURES = ("x86_64", "arm64")
GITHUB_SECRET_ENV = "PXED_GITHUB_CLIENT_SECRET"
# Overrides mgmtos_build: the test suite turns the build off for every pxed
# it starts, twistd subprocesses included.
MGMTOS_BUILD_ENV = "PXED_MGMTOS_BUILD"

Positive = Meta(gt=0)
NonEmpty = Meta(min_length=1)


# Loopback, the private ranges (RFC 1918, IPv6 unique local) and link-local.
DEFAULT_BOOT_NETWORKS = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
    "169.254.0.0/16",
    "fe80::/10",
)


class ConfigError(Exception):
    """A setting is missing, malformed or out of range."""


@dataclass(frozen=True)
class BootFiles:
    """What the management OS is made of for one architecture.

    kernel and initrd are paths under the static dir (served at /static/) or
    absolute http(s) URLs."""

    kernel: Annotated[str, NonEmpty]
    initrd: tuple[str, ...]
    cmdline: str = ""


def _default_boot() -> dict[str, BootFiles]:
    return {
        arch: BootFiles(
            kernel=f"mgmtos/{arch}/vmlinuz",
            initrd=(f"mgmtos/{arch}/initramfs",),
            cmdline="console=ttyS0,115200 console=tty0" if arch == "x86_64" else "console=ttyAMA0",
        )
        for arch in ARCHITECTURES
    }


@dataclass(frozen=True)
class GitHub:
    """GitHub (or GitHub Enterprise) OAuth app for browser sign-in."""

    client_id: str = ""
    # Never printed: repr=False keeps it out of any log of the config.
    client_secret: str = field(default="", repr=False)
    url: str = "https://github.com"
    api_url: str = "https://api.github.com"
    # Where the browser goes after signing in.
    redirect: str = "/"

    @property
    def enabled(self) -> bool:
        return bool(self.client_id and self.client_secret)


@dataclass(frozen=True)
class Config:
    port: Annotated[str, NonEmpty] = "tcp:4848"
    data_dir: Path = Path("var")
    database: str = ""
    base_url: str = ""
    boot_policy: Literal["on-demand", "always"] = "on-demand"
    static_dir: Path | None = None
    cors_origins: tuple[str, ...] = ()
    # Seconds a client has for a request's line and headers (from when it
    # connects, or from the previous answer); connections one client
    # address may hold open at once.
    header_timeout: Annotated[float, Positive] = 30.0
    max_connections_per_client: Annotated[int, Positive] = 64
    # Open GET /events/stream answers, all clients together; each holds a
    # connection and up to 1 MiB of unread events.
    max_event_streams: Annotated[int, Positive] = 256
    # Seconds between keep-alive comments on an event stream (proxies drop
    # idle connections); each also checks the stream's credential again.
    event_stream_keepalive: Annotated[float, Positive] = 15.0
    # Bytes of events written to a stream whose client has stopped reading
    # (beyond the socket's buffers) before the stream is closed.
    event_stream_backlog: Annotated[int, Positive] = 1 << 20
    migrate: bool = True
    session_hours: Annotated[float, Positive] = 8.0
    machine_token_hours: Annotated[float, Positive] = 4.0
    # A deleted user's images, setups, boot work and builds: handed to an
    # admin (the one deleting him, else the oldest), or removed with him.
    # Either way his queued work never boots.
    on_user_delete: Literal["admin", "remove"] = "admin"
    # Seconds a database write waits for a lock held elsewhere (SQLite's
    # busy_timeout, PostgreSQL's lock_timeout) before answering 503.
    db_busy_timeout: Annotated[float, Positive] = 1.0
    # Image builds: the Docker engine ("" = $DOCKER_HOST, else the local
    # socket), how many run at once, when one is killed, and room left free
    # on a built disk's root filesystem.
    docker_host: str = ""
    build_concurrency: Annotated[int, Positive] = 1
    build_timeout: Annotated[float, Positive] = 3600.0
    build_headroom_mib: Annotated[int, Positive] = 256
    # Several servers on one database: this one's name, unique among them
    # ("" = the host name and the port setting), and the seconds after
    # which a build whose server has stopped renewing it (every quarter of
    # that) is taken over (queued) or failed (running) by another.
    server_name: str = ""
    build_lease: Annotated[float, Meta(ge=2)] = 60.0
    # The largest image POST /image creates (bytes); 0: half the total size
    # of the data dir's filesystem, measured at start.
    max_image_size: Annotated[int, Meta(ge=0)] = 0
    # The chunk store (pxed/chunkstore.py): whether versions are cut into
    # content-defined chunks stored once each; the average chunk size
    # (bytes; a quarter of it is the smallest chunk, four times the
    # largest); whether a version's whole file stays beside its chunks
    # (twice the space, downloads by sendfile); seconds between
    # collections of chunks no version names.
    chunk_store: bool = True
    chunk_size: Annotated[int, Meta(ge=16384, le=16 * 1024 * 1024)] = 65536
    keep_whole_files: bool = False
    chunk_gc_interval: Annotated[float, Positive] = 3600.0
    # POST /image/<uuid>/import: the largest body fetched (bytes; 0: the
    # max_image_size limit), seconds a whole import may take, redirects
    # followed, whether loopback/private/link-local addresses may be
    # fetched from, networks that may be though private (CIDRs), imports
    # running at once and waiting beyond those.
    import_max_bytes: Annotated[int, Meta(ge=0)] = 0
    import_timeout: Annotated[float, Positive] = 3600.0
    import_max_redirects: Annotated[int, Meta(ge=0, le=20)] = 5
    import_allow_private: bool = False
    import_allow_networks: tuple[str, ...] = ()
    import_concurrency: Annotated[int, Positive] = 2
    import_queue: Annotated[int, Meta(ge=0)] = 16
    # Leases (POST /leases): what one user of each role may hold (machines
    # under lease at once, hours per lease, days ahead a lease may start;
    # 0: no limit).  Admins have none.
    lease_user_machines: Annotated[int, Meta(ge=0)] = 4
    lease_user_hours: Annotated[float, Meta(ge=0)] = 168.0
    lease_user_ahead_days: Annotated[float, Meta(ge=0)] = 30.0
    lease_moderator_machines: Annotated[int, Meta(ge=0)] = 0
    lease_moderator_hours: Annotated[float, Meta(ge=0)] = 720.0
    lease_moderator_ahead_days: Annotated[float, Meta(ge=0)] = 180.0
    # Seconds between the lease keeper's looks (ends, warnings, holding
    # other users' work off), and minutes before its end a holder is told.
    lease_check_interval: Annotated[float, Positive] = 30.0
    lease_warning_minutes: Annotated[float, Meta(ge=0)] = 15.0
    # Clients the boot routes answer (CIDRs); anyone else is told to boot
    # locally and gets no credential.
    boot_networks: tuple[str, ...] = DEFAULT_BOOT_NETWORKS
    # Unknown MACs that netboot from boot_networks get the management OS
    # in enlist mode, with a credential that can only register their
    # inventory; the machine then waits, unmanaged, for an admin.  At most
    # max_enlisting machines are enlisting or waiting at once.
    enlist: bool = False
    max_enlisting: Annotated[int, Positive] = 64
    # pxed answering the boot network itself (pxed/bootnet/): "proxy" runs
    # dnsmasq as proxyDHCP and TFTP on boot_dhcp_interface beside the lab's
    # DHCP server; "off" leaves netboot to pixiecore or the lab's DHCP.
    boot_dhcp: Literal["off", "proxy"] = "off"
    boot_dhcp_interface: str = ""
    boot_dhcp_command: Annotated[str, NonEmpty] = "dnsmasq"
    # Where Debian's ipxe package puts undionly.kpxe, snponly.efi, ipxe.efi.
    boot_dhcp_ipxe_dir: Path = Path("/usr/lib/ipxe")
    # What UEFI PXE and UEFI HTTP boot clients get: snponly.efi drives the
    # NIC through the firmware's own driver, ipxe.efi through iPXE's.
    boot_dhcp_efi: Literal["snponly.efi", "ipxe.efi"] = "snponly.efi"
    # More dnsmasq options, one per entry, as in dnsmasq.conf.
    boot_dhcp_options: tuple[str, ...] = ()
    # The boot answers come from memory, loaded again on every change pxed
    # makes or hears of; also every this many seconds regardless.
    boot_view_refresh: Annotated[float, Positive] = 30.0
    # Seconds between writes of repeated boot answers to the event log.
    boot_answer_log_interval: Annotated[float, Positive] = 15.0
    # Boot answers in the access log too (each machine's events and
    # /metrics have them either way).
    log_boot_answers: bool = False
    # Clients that may read /metrics without a credential (CIDRs); anyone
    # else needs an admin's.
    metrics_networks: tuple[str, ...] = ()
    # Power control through machines' BMCs (Redfish, IPMI): seconds one
    # call to a BMC may take, and how many times a failed call is tried
    # again (one second apart) before the action fails.
    power_timeout: Annotated[float, Positive] = 10.0
    power_retries: Annotated[int, Meta(ge=0, le=10)] = 2
    # A management OS missing at start: built in the background ("auto",
    # when this host can) or only reported ("off"); the build's cache of
    # the kernel package (pxed/mgmtosbuild.py).
    mgmtos_build: Literal["auto", "off"] = "auto"
    mgmtos_cache: Path = Path("/var/cache/pxed/mgmtos")
    mgmtos: dict[str, BootFiles] = field(default_factory=_default_boot)
    github: GitHub = field(default_factory=GitHub)

    @property
    def database_url(self) -> str:
        if self.database:
            return self.database
        return f"sqlite:///{(self.data_dir / 'pxed.sqlite').resolve()}"

    @property
    def server(self) -> str:
        """The name this server goes by among those sharing the database."""
        return self.server_name or f"{socket.gethostname()} {self.port}"

    @property
    def static_path(self) -> Path:
        return self.static_dir if self.static_dir is not None else self.data_dir / "static"


def defaults() -> dict[str, Any]:
    """The default Config as TOML-shaped data: the tables a file and the
    command line are merged into, and the list of every known setting."""
    return msgspec.to_builtins(Config(), enc_hook=str)


def load(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Config:
    """Build a Config from the defaults, the TOML file at *path* (if any) and
    *overrides* (command-line options; None values are ignored).  *env*
    (default: os.environ) may carry the GitHub client secret."""
    env = dict(os.environ) if env is None else env
    raw = defaults()
    if path is not None:
        _merge(raw, _read_file(Path(path)), f" in {path}")
    _merge(raw, {k: v for k, v in (overrides or {}).items() if v is not None}, "")
    if env.get(GITHUB_SECRET_ENV):
        raw["github"]["client_secret"] = env[GITHUB_SECRET_ENV]
    if env.get(MGMTOS_BUILD_ENV):
        raw["mgmtos_build"] = env[MGMTOS_BUILD_ENV]
    # TOML has no null: an empty string leaves an optional setting unset.
    for key, value in defaults().items():
        if value is None and raw[key] == "":
            raw[key] = None
    # Converted one architecture at a time so an error names it (msgspec
    # does not put dict keys in its error paths).
    boot = {}
    for arch, table in raw["mgmtos"].items():
        if isinstance(table.get("initrd"), str):  # a lone initrd needs no list
            table["initrd"] = [table["initrd"]]
        boot[arch] = _convert(table, BootFiles, f"mgmtos.{arch}")
    config = _convert(raw | {"mgmtos": boot}, Config)
    validate(config)
    return config


def _merge(into: dict[str, Any], new: dict[str, Any], source: str, prefix: str = "") -> None:
    """Lay *new* over *into*, table by table.  *into* starts as the defaults,
    so it holds every known key: anything else is a misspelt setting."""
    for key, value in new.items():
        name = prefix + key
        if key not in into:
            close = difflib.get_close_matches(key, into, n=1)
            if close:
                hint = f" (did you mean {prefix}{close[0]}?)"
            else:  # a table's few keys are worth listing; the top level's are not
                hint = f" (known: {', '.join(into)})" if prefix else ""
            raise ConfigError(f"{name}: unknown setting{source}{hint}")
        if isinstance(into[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a table, got {type(value).__name__}")
            _merge(into[key], value, source, name + ".")
        else:
            into[key] = value


def _convert(data: Any, cls: type, prefix: str = "") -> Any:
    """msgspec checks *data* against the types of *cls*'s fields; its error
    ("Expected `int` >= 1 - at `$.build_concurrency`") is turned round into
    ours ("build_concurrency: expected int >= 1")."""
    try:
        return msgspec.convert(data, cls, strict=True, dec_hook=_decode_path)
    except msgspec.ValidationError as e:
        message, _, where = str(e).partition(" - at `$")
        where = where.rstrip("`").lstrip(".")
        name = ".".join(part for part in (prefix, where) if part)
        message = message.replace("`", "")
        if message.startswith("Invalid enum value "):  # a Literal field: list its values
            allowed = ", ".join(get_args(get_type_hints(cls).get(where)))
            message = f"must be one of {allowed}, got {message.split(' ', 3)[3]}"
        raise ConfigError(f"{name}: {message[:1].lower()}{message[1:]}") from None


def _decode_path(cls: type, value: Any) -> Any:
    if cls is Path:
        if not isinstance(value, str):
            raise TypeError(f"Expected a path (a string), got {type(value).__name__}")
        return Path(value).expanduser()
    raise NotImplementedError


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config: file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"config: cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {path} is not valid TOML: {e}") from None


def _web_url(url: str) -> SplitResult | None:
    """*url* split, if it is an absolute http(s) URL."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed [IPv6 bracket
        return None
    return parts if parts.scheme in ("http", "https") and parts.netloc else None


def validate(config: Config) -> None:
    """What the field types cannot say: URLs and settings that go together."""
    if config.base_url:
        parts = _web_url(config.base_url)
        if parts is None:
            raise ConfigError(
                f"base_url: must be an http:// or https:// URL, got {config.base_url!r}"
            )
        if parts.query or parts.fragment:
            raise ConfigError("base_url: must not have a query or fragment")
    for origin in config.cors_origins:
        parts = _web_url(origin)
        if parts is None or parts.path:
            raise ConfigError(f"cors_origins: {origin!r} is not an origin like https://host[:port]")
    for setting in ("boot_networks", "metrics_networks", "import_allow_networks"):
        for network in getattr(config, setting):
            try:
                ipaddress.ip_network(network)
            except ValueError as e:
                raise ConfigError(f"{setting}: {network!r} is not a CIDR ({e})") from None
    for arch, files in config.mgmtos.items():
        # pixiecore ignores a machine whose cmdline has a line break, and
        # in an iPXE script the rest would run as commands.
        if "\n" in files.cmdline or "\r" in files.cmdline:
            raise ConfigError(f"mgmtos.{arch}.cmdline: must be one line, without line breaks")
    if config.boot_dhcp == "proxy" and not config.boot_dhcp_interface:
        raise ConfigError(
            'boot_dhcp_interface: required with boot_dhcp = "proxy" (the interface'
            " the machines netboot on, e.g. eth1)"
        )
    for option in config.boot_dhcp_options:
        if "\n" in option or not option.strip():
            raise ConfigError(f"boot_dhcp_options: {option!r} is not one dnsmasq option")
    for key in ("url", "api_url"):
        if _web_url(getattr(config.github, key)) is None:
            raise ConfigError(f"github.{key}: must be an http(s) URL")
    if bool(config.github.client_id) != bool(config.github.client_secret):
        raise ConfigError(
            f"github: client_id and client_secret (or ${GITHUB_SECRET_ENV}) go together"
        )
    if config.database:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(config.database)
        except ArgumentError:
            raise ConfigError(f"database: not an SQLAlchemy URL: {config.database!r}") from None


def replace(config: Config, **changes: Any) -> Config:
    return dataclasses.replace(config, **changes)
