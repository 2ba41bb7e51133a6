"""Configuration: built-in defaults, overridden by a TOML file, overridden by
command-line options.  Every problem is reported as a ConfigError naming the
setting, so startup can fail with one line instead of a traceback."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BOOT_POLICIES = ("on-demand", "always")
ARCHITECTURES = ("x86_64", "arm64")


class ConfigError(Exception):
    """A setting is missing, malformed or out of range."""


@dataclass(frozen=True)
class BootFiles:
    """What the management OS is made of for one architecture.

    kernel and initrd are paths under the static dir (served at /static/) or
    absolute http(s) URLs."""

    kernel: str
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


GITHUB_SECRET_ENV = "PXED_GITHUB_CLIENT_SECRET"


@dataclass(frozen=True)
class Config:
    port: str = "tcp:4848"
    data_dir: Path = Path("var")
    database: str = ""
    base_url: str = ""
    boot_policy: str = "on-demand"
    static_dir: Path | None = None
    cors_origins: tuple[str, ...] = ()
    migrate: bool = True
    session_hours: float = 8.0
    machine_token_hours: float = 4.0
    # Image builds: the Docker engine ("" = $DOCKER_HOST, else the local
    # socket), how many run at once, when one is killed, and room left free
    # on a built disk's root filesystem.
    docker_host: str = ""
    build_concurrency: int = 1
    build_timeout: float = 3600.0
    build_headroom_mib: int = 256
    mgmtos: dict[str, BootFiles] = field(default_factory=_default_boot)
    github: GitHub = field(default_factory=GitHub)

    @property
    def database_url(self) -> str:
        if self.database:
            return self.database
        return f"sqlite:///{(self.data_dir / 'pxed.sqlite').resolve()}"

    @property
    def static_path(self) -> Path:
        return self.static_dir if self.static_dir is not None else self.data_dir / "static"


# setting name -> (type check description, converter)
def _str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {type(value).__name__}")
    return value


def _path(name: str, value: Any) -> Path:
    return Path(_str(name, value)).expanduser()


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    return value


def _str_list(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}: expected a list of strings")
    return tuple(value)


def _hours(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{name}: expected a positive number of hours, got {value!r}")
    return float(value)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    return value


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{name}: expected a positive number of seconds, got {value!r}")
    return float(value)


_CONVERTERS = {
    "docker_host": _str,
    "build_concurrency": _positive_int,
    "build_timeout": _seconds,
    "build_headroom_mib": _positive_int,
    "session_hours": _hours,
    "machine_token_hours": _hours,
    "port": _str,
    "data_dir": _path,
    "database": _str,
    "base_url": _str,
    "boot_policy": _str,
    "static_dir": _path,
    "cors_origins": _str_list,
    "migrate": _bool,
}


def _boot_files(arch: str, table: Any, default: BootFiles | None) -> BootFiles:
    prefix = f"mgmtos.{arch}"
    if arch not in ARCHITECTURES:
        raise ConfigError(f"{prefix}: unknown architecture (known: {', '.join(ARCHITECTURES)})")
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix}: expected a table")
    unknown = set(table) - {"kernel", "initrd", "cmdline"}
    if unknown:
        raise ConfigError(f"{prefix}.{sorted(unknown)[0]}: unknown setting")
    base = default or BootFiles(kernel="", initrd=())
    kernel = _str(f"{prefix}.kernel", table.get("kernel", base.kernel))
    initrd_value = table.get("initrd", list(base.initrd))
    if isinstance(initrd_value, str):
        initrd_value = [initrd_value]
    initrd = _str_list(f"{prefix}.initrd", initrd_value)
    cmdline = _str(f"{prefix}.cmdline", table.get("cmdline", base.cmdline))
    if not kernel:
        raise ConfigError(f"{prefix}.kernel: must not be empty")
    return BootFiles(kernel=kernel, initrd=initrd, cmdline=cmdline)


def _github(table: Any, env: dict[str, str]) -> GitHub:
    if not isinstance(table, dict):
        raise ConfigError("github: expected a table")
    known = {f.name for f in dataclasses.fields(GitHub)}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"github.{sorted(unknown)[0]}: unknown setting")
    values = {k: _str(f"github.{k}", v) for k, v in table.items()}
    if env.get(GITHUB_SECRET_ENV):
        values["client_secret"] = env[GITHUB_SECRET_ENV]
    github = GitHub(**values)
    for key in ("url", "api_url"):
        parts = urlsplit(getattr(github, key))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"github.{key}: must be an http(s) URL")
    if bool(github.client_id) != bool(github.client_secret):
        raise ConfigError(
            f"github: client_id and client_secret (or ${GITHUB_SECRET_ENV}) go together"
        )
    return github


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


def load(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Config:
    """Build a Config from the defaults, the TOML file at *path* (if any) and
    *overrides* (command-line options; None values are ignored).  *env*
    (default: os.environ) may carry the GitHub client secret."""
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    mgmtos = _default_boot()
    github_table: dict[str, Any] = {}
    if path is not None:
        data = _read_file(Path(path))
        for key, value in data.items():
            if key == "github":
                github_table = value
            elif key == "mgmtos":
                if not isinstance(value, dict):
                    raise ConfigError("mgmtos: expected a table of architectures")
                for arch, table in value.items():
                    mgmtos[arch] = _boot_files(arch, table, mgmtos.get(arch))
            elif key in _CONVERTERS:
                values[key] = _CONVERTERS[key](key, value)
            else:
                raise ConfigError(f"{key}: unknown setting in {path}")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in _CONVERTERS:
            raise ConfigError(f"{key}: unknown setting")
        values[key] = _CONVERTERS[key](key, value)
    config = Config(**values, mgmtos=mgmtos, github=_github(github_table, env))
    validate(config)
    return config


def validate(config: Config) -> None:
    if config.boot_policy not in BOOT_POLICIES:
        raise ConfigError(
            f"boot_policy: must be one of {', '.join(BOOT_POLICIES)}, got {config.boot_policy!r}"
        )
    if config.base_url:
        parts = urlsplit(config.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"base_url: must be an http:// or https:// URL, got {config.base_url!r}"
            )
        if parts.query or parts.fragment:
            raise ConfigError("base_url: must not have a query or fragment")
    if not config.port:
        raise ConfigError("port: must not be empty")
    for origin in config.cors_origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ConfigError(f"cors_origins: {origin!r} is not an origin like https://host[:port]")
    if config.database:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(config.database)
        except ArgumentError:
            raise ConfigError(f"database: not an SQLAlchemy URL: {config.database!r}") from None


def replace(config: Config, **changes: Any) -> Config:
    return dataclasses.replace(config, **changes)
