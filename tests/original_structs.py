"""Mirrors of the original Go server's model structs, as their JSON encoding
(``encoding/json`` with no tags but ``json:"-"``), and a strict decoder.

Written from ``../shared/seed/original/pkg/model/**`` and ``pkg/util``:
field names and nesting are the Go ones, types are the JSON types the Go
encoder writes (``string`` → str, ``bool`` → bool, ``uint64`` → int ≥ 0,
a struct → object, a slice → list).  ``decode`` fails on a missing or
mistyped field, naming its path (``Images[0].Version.Version``); keys the
Go struct does not have are allowed, as Go's decoder ignores them.

Nil slices encode as ``null`` in Go; pxed always sends a list, and the
decoder insists on one (``null`` would decode in Go, but a JS client doing
``setup.Images.length`` would not survive it).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any


class UInt64(int):
    """A Go ``uint64``: a JSON integer, not negative, not a bool."""


@dataclass(frozen=True)
class MacAddress:
    # pkg/util.MacAddress
    Address: str


@dataclass(frozen=True)
class MachineModel:
    # pkg/model/machine.MachineModel
    Name: str
    Architecture: str
    Managed: bool
    MacAddress: MacAddress
    ImageUUID: str


@dataclass(frozen=True)
class Version:
    # pkg/model/images.Version (gorm.Model is json:"-")
    Version: UInt64
    ImageModelUUID: str


@dataclass(frozen=True)
class ImageModel:
    # pkg/model/images.ImageModel (ImagePath is json:"-"); DiskType
    # (ImageFileType) marshals as a quoted string.
    Name: str
    Versions: list[Version]
    UUID: str
    Username: str
    DiskCompressionStrategy: str
    ImageFileType: str
    Type: str
    Checksum: str
    Filesystem: str


@dataclass(frozen=True)
class ImageFrozen:
    # pkg/model/images.ImageFrozen (UUIDImage, VersionID, ImageSetupUUID
    # are json:"-")
    Image: ImageModel
    Version: Version
    Update: bool


@dataclass(frozen=True)
class ImageSetup:
    # pkg/model/images.ImageSetup
    Name: str
    Images: list[ImageFrozen]
    Username: str
    UUID: str


@dataclass(frozen=True)
class BootSetup:
    # pkg/model/images.BootSetup
    Machine: MachineModel
    MachineMAC: str
    Setup: ImageSetup
    SetupUUID: str
    Update: bool


@dataclass(frozen=True)
class UserModel:
    # pkg/model/user.UserModel (Images, Setups are json:"-")
    Username: str
    Name: str
    Email: str
    Role: str


@dataclass(frozen=True)
class ImageSetupMessage:
    # pkg/model.ImageSetupMessage
    UUID: str
    Version: UInt64
    Update: bool


# -- pxed's extensions -------------------------------------------------------
# Not the original's: objects pxed adds beside the original's fields, held
# to the same strict decoding.


@dataclass(frozen=True)
class Progress:
    # "Progress" of GET /machine/{mac} and GET /machines (null without
    # work): the current work's step and percentage.  Image and UpdatedAt
    # (null before the first report) are not checked here.
    WorkID: UInt64
    State: str
    Step: str
    Percent: UInt64
    Written: UInt64
    Total: UInt64
    Images: UInt64
    ImagesWritten: UInt64
    ImageWritten: UInt64
    ImageTotal: UInt64


STRUCTS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        MacAddress,
        MachineModel,
        Version,
        ImageModel,
        ImageFrozen,
        ImageSetup,
        BootSetup,
        UserModel,
        ImageSetupMessage,
        Progress,
    )
}


def decode(struct: str | type, value: Any, path: str = "") -> Any:
    """*value* (decoded JSON) as an instance of the mirror *struct* (a class
    or its name), or an AssertionError naming the first wrong field."""
    cls = STRUCTS[struct] if isinstance(struct, str) else struct
    return _decode(cls, value, path or cls.__name__)


def _decode(kind: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(kind):
        assert isinstance(value, dict), f"{path}: expected an object, got {value!r}"
        hints = typing.get_type_hints(kind)
        out = {}
        for f in dataclasses.fields(kind):
            where = f"{path}.{f.name}"
            assert f.name in value, f"{where}: missing (keys: {sorted(value)})"
            out[f.name] = _decode(hints[f.name], value[f.name], where)
        return kind(**out)
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        assert isinstance(value, list), f"{path}: expected a list, got {value!r}"
        return [_decode(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind is UInt64:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        assert ok, f"{path}: expected an unsigned integer, got {value!r}"
        return value
    if kind is bool:
        assert isinstance(value, bool), f"{path}: expected true or false, got {value!r}"
        return value
    if kind is str:
        assert isinstance(value, str), f"{path}: expected a string, got {value!r}"
        return value
    raise TypeError(f"{path}: no rule for {kind!r}")
