"""Where pxectl keeps the server's URL and the API token:
``$XDG_CONFIG_HOME/pxed/cli.toml`` (``~/.config`` by default), mode 0600.
``PXED_URL`` and ``PXED_TOKEN`` override what the file says."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    url: str | None
    token: str | None


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pxed" / "cli.toml"


def load() -> Settings:
    stored: dict = {}
    path = config_path()
    if path.exists():
        with path.open("rb") as f:
            stored = tomllib.load(f)
    return Settings(
        url=os.environ.get("PXED_URL") or stored.get("url"),
        token=os.environ.get("PXED_TOKEN") or stored.get("token"),
    )


def save(url: str, token: str) -> Path:
    """Written to a new file created 0600 and renamed over the old one, so
    the token is never readable by others, not even for a moment."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = path.with_suffix(".tmp")
    staging.unlink(missing_ok=True)
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    # A JSON string is a valid TOML basic string for what a URL or a token holds.
    with os.fdopen(fd, "w") as f:
        f.write(f"url = {json.dumps(url)}\ntoken = {json.dumps(token)}\n")
    os.replace(staging, path)
    return path
