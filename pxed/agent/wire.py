"""What the agent and pxed send each other, as dataclasses: BootInform (the
work) and its entries, the machine image, the hardware inventory, progress,
log lines, the completion and an upload's answer.  ``from_json`` reads
pxed's answers (field names matched case-insensitively, as pxed matches
its input); ``to_json`` gives the bodies the agent sends.  The server's
tests may build their requests with these too."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Log lines pxed takes up to 16,000 characters, completion messages up to
# 4,000; the agent keeps under both.
MAX_LOG = 15000
MAX_COMPLETE = 3900
COMPRESSIONS = ("none", "gzip", "zstd")


class WireError(ValueError):
    """An answer of pxed's is not what the protocol says."""


def _get(data: dict[str, Any], name: str, default: Any = None) -> Any:
    if name in data:
        return data[name]
    lower = name.lower()
    for key, value in data.items():
        if isinstance(key, str) and key.lower() == lower:
            return value
    return default


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise WireError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _opt_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"{what}: expected an integer, got {value!r}")
    return value


def _opt_str(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise WireError(f"{what}: expected a string, got {value!r}")
    return value


def clean_text(text: str, limit: int) -> str:
    """*text* without control characters JSON carries but logs should not
    (newlines and tabs stay), at most *limit* characters."""
    return "".join(c for c in text[:limit] if c >= " " or c in "\n\t")


HINT_TEXT = 255
# Root device hints (pxed/agent/hints.py): JSON field -> attribute.
HINT_FIELDS = {
    "Serial": "serial",
    "WWN": "wwn",
    "Model": "model",
    "MinSize": "min_size",
    "MaxSize": "max_size",
    "Rotational": "rotational",
    "ByPath": "by_path",
}


@dataclass(frozen=True)
class DiskHints:
    """A setup entry's root device hints (see pxed/agent/hints.py)."""

    serial: str | None = None
    wwn: str | None = None
    model: str | None = None
    min_size: int | None = None
    max_size: int | None = None
    rotational: bool | None = None
    by_path: str | None = None

    @classmethod
    def from_json(cls, data: Any, where: str = "DiskHints") -> DiskHints | None:
        """The hints of a JSON object (None for null or {}); WireError
        naming the field for anything else."""
        if data is None:
            return None
        if not isinstance(data, dict):
            raise WireError(f"{where}: expected an object of {', '.join(HINT_FIELDS)}")
        # Field names match case-insensitively, as everywhere in pxed's API.
        canonical = {k.lower(): k for k in HINT_FIELDS}
        data = {canonical.get(str(k).lower(), k): v for k, v in data.items()}
        unknown = sorted(set(data) - set(HINT_FIELDS))
        if unknown:
            raise WireError(
                f"{where}.{unknown[0][:40]}: unknown; hints are {', '.join(HINT_FIELDS)}"
            )
        values: dict[str, Any] = {}
        for key in ("Serial", "WWN", "Model", "ByPath"):
            value = data.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip() or len(value) > HINT_TEXT:
                raise WireError(f"{where}.{key}: a non-empty string of at most {HINT_TEXT}")
            values[HINT_FIELDS[key]] = value.strip()
        for key in ("MinSize", "MaxSize"):
            value = data.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
                raise WireError(f"{where}.{key}: a size in bytes, a positive integer")
            values[HINT_FIELDS[key]] = value
        rotational = data.get("Rotational")
        if rotational is not None:
            if not isinstance(rotational, bool):
                raise WireError(f"{where}.Rotational: true or false")
            values["rotational"] = rotational
        hints = cls(**values)
        if hints.min_size and hints.max_size and hints.min_size > hints.max_size:
            raise WireError(f"{where}: MinSize is larger than MaxSize")
        return hints if values else None

    def to_json(self) -> dict[str, Any]:
        return {
            key: getattr(self, attr)
            for key, attr in HINT_FIELDS.items()
            if getattr(self, attr) is not None
        }

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.to_json().items())


@dataclass(frozen=True)
class ImageEntry:
    """One image of the work (the original's ImageFrozen with pxed's fields
    beside it): where to download and upload it, its stored size and
    sha256, its compression, and the index of the disk it goes to (None
    for the machine image, which is not written to a disk)."""

    uuid: str
    name: str
    version: int
    update: bool = False
    url: str | None = None
    upload_url: str | None = None
    size: int | None = None
    sha256: str | None = None
    compression: str = "none"
    file_type: str = "raw"
    type: str = ""
    disk: int | None = None
    # Given: the disk is the one these pick, not the disk-th (hints.py).
    disk_hints: DiskHints | None = None
    # Grow its last partition and filesystem to the disk (grow.py).
    grow: bool = False

    @classmethod
    def from_json(cls, data: Any, where: str = "Images[]") -> ImageEntry:
        data = _object(data, where)
        image = _object(_get(data, "Image", {}), f"{where}.Image")
        version = _get(data, "Version", {})
        number = _get(version, "Version") if isinstance(version, dict) else version
        uuid = _opt_str(_get(image, "UUID"), f"{where}.Image.UUID")
        if not uuid:
            raise WireError(f"{where}.Image.UUID: missing")
        compression = _get(data, "DiskCompressionStrategy", None)
        if compression is None:
            compression = _get(image, "DiskCompressionStrategy", "none")
        return cls(
            uuid=uuid,
            name=_opt_str(_get(image, "Name"), f"{where}.Image.Name") or "",
            version=_opt_int(number, f"{where}.Version.Version") or 0,
            update=bool(_get(data, "Update", False)),
            url=_opt_str(_get(data, "URL"), f"{where}.URL"),
            upload_url=_opt_str(_get(data, "UploadURL"), f"{where}.UploadURL"),
            size=_opt_int(_get(data, "Size"), f"{where}.Size"),
            sha256=_opt_str(_get(data, "Sha256"), f"{where}.Sha256"),
            compression=str(compression or "none").lower(),
            file_type=str(_get(image, "ImageFileType") or "raw").lower(),
            type=str(_get(image, "Type") or ""),
            disk=_opt_int(_get(data, "Disk"), f"{where}.Disk"),
            disk_hints=DiskHints.from_json(_get(data, "DiskHints"), f"{where}.DiskHints"),
            grow=bool(_get(image, "Grow", False)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "Image": {
                "UUID": self.uuid,
                "Name": self.name,
                "Type": self.type,
                "ImageFileType": self.file_type,
                "DiskCompressionStrategy": self.compression,
                "Grow": self.grow,
            },
            "Version": {"Version": self.version, "ImageModelUUID": self.uuid},
            "Update": self.update,
            "URL": self.url,
            "UploadURL": self.upload_url,
            "Size": self.size,
            "Sha256": self.sha256,
            "DiskCompressionStrategy": self.compression,
            "Disk": self.disk,
            "DiskHints": None if self.disk_hints is None else self.disk_hints.to_json(),
        }


@dataclass(frozen=True)
class MachineImage:
    """The machine's own small image, where the agent records each boot."""

    uuid: str
    url: str | None
    upload_url: str | None
    version: int | None = None
    size: int | None = None
    sha256: str | None = None
    filesystem: str = "ext4"
    compression: str = "none"

    @classmethod
    def from_json(cls, data: Any) -> MachineImage:
        data = _object(data, "MachineImage")
        return cls(
            uuid=_opt_str(_get(data, "UUID"), "MachineImage.UUID") or "",
            url=_opt_str(_get(data, "URL"), "MachineImage.URL"),
            upload_url=_opt_str(_get(data, "UploadURL"), "MachineImage.UploadURL"),
            version=_opt_int(_get(data, "Version"), "MachineImage.Version"),
            size=_opt_int(_get(data, "Size"), "MachineImage.Size"),
            sha256=_opt_str(_get(data, "Sha256"), "MachineImage.Sha256"),
            filesystem=str(_get(data, "Filesystem") or "ext4"),
            compression=str(_get(data, "DiskCompressionStrategy") or "none"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "UUID": self.uuid,
            "Version": self.version,
            "Size": self.size,
            "Sha256": self.sha256,
            "Filesystem": self.filesystem,
            "DiskCompressionStrategy": self.compression,
            "URL": self.url,
            "UploadURL": self.upload_url,
        }


@dataclass(frozen=True)
class Erase:
    """What the work erases before it writes (pxed/erase.py decides)."""

    policy: str
    reason: str = ""

    @classmethod
    def from_json(cls, data: Any) -> Erase | None:
        if data is None:
            return None
        data = _object(data, "Erase")
        policy = _opt_str(_get(data, "Policy"), "Erase.Policy") or ""
        if policy not in ("metadata", "discard", "full"):
            raise WireError(f"Erase.Policy: metadata, discard or full (got {policy[:20]!r})")
        return cls(policy, _opt_str(_get(data, "Reason"), "Erase.Reason") or "")

    def to_json(self) -> dict[str, Any]:
        return {"Policy": self.policy, "Reason": self.reason}


@dataclass(frozen=True)
class BootInform:
    """pxed's answer to GET /machine/{mac}/boot: the work taken."""

    id: int
    name: str
    setup_uuid: str
    username: str
    images: tuple[ImageEntry, ...]
    machine_image: MachineImage | None = None
    # Where to get the cloud-init seed for the boot disk (None: no seed).
    seed_url: str | None = None
    erase: Erase | None = None

    @classmethod
    def from_json(cls, data: Any) -> BootInform:
        data = _object(data, "BootInform")
        images = _get(data, "Images", [])
        if not isinstance(images, list):
            raise WireError("Images: expected a list")
        machine_image = _get(data, "MachineImage")
        setup_uuid = _get(data, "SetupUUID") or _get(data, "UUID") or ""
        return cls(
            id=_opt_int(_get(data, "ID"), "ID") or 0,
            name=str(_get(data, "Name") or ""),
            setup_uuid=str(setup_uuid),
            username=str(_get(data, "Username") or ""),
            images=tuple(ImageEntry.from_json(e, f"Images[{i}]") for i, e in enumerate(images)),
            machine_image=MachineImage.from_json(machine_image) if machine_image else None,
            seed_url=_opt_str(_get(_object(_get(data, "Seed") or {}, "Seed"), "URL"), "Seed.URL"),
            erase=Erase.from_json(_get(data, "Erase")),
        )

    @property
    def disk_images(self) -> tuple[ImageEntry, ...]:
        """The entries written to a disk, in BootInform's order."""
        return tuple(e for e in self.images if e.disk is not None)

    @property
    def disks_needed(self) -> int:
        # Each image takes a disk of its own; one without hints, its index's.
        by_index = (
            e.disk + 1 for e in self.disk_images if e.disk is not None and e.disk_hints is None
        )
        return max(len(self.disk_images), max(by_index, default=0))

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Name": self.name,
            "SetupUUID": self.setup_uuid,
            "UUID": self.setup_uuid,
            "Username": self.username,
            "Images": [e.to_json() for e in self.images],
            "MachineImage": self.machine_image.to_json() if self.machine_image else None,
            "Seed": None if self.seed_url is None else {"URL": self.seed_url},
            "Erase": None if self.erase is None else self.erase.to_json(),
        }


@dataclass(frozen=True)
class InventoryDisk:
    name: str
    size: int
    model: str = ""
    serial: str = ""
    rotational: bool | None = None
    wwn: str = ""
    by_path: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "Name": self.name,
            "Size": self.size,
            "Model": self.model,
            "Serial": self.serial,
            "Rotational": self.rotational,
            "WWN": self.wwn,
            "ByPath": list(self.by_path),
        }


@dataclass(frozen=True)
class InventoryNIC:
    mac: str
    driver: str = ""
    link: bool = False
    speed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"MAC": self.mac, "Driver": self.driver, "Link": self.link, "Speed": self.speed}


@dataclass(frozen=True)
class Inventory:
    """The hardware inventory (PUT /machine/{mac}/hardware), in the shape
    pxed/web/inventory.py takes."""

    arch: str
    cpu_model: str
    cpu_count: int
    memory: int
    firmware: str
    dmi_vendor: str = ""
    dmi_product: str = ""
    dmi_serial: str = ""
    disks: tuple[InventoryDisk, ...] = ()
    nics: tuple[InventoryNIC, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "Arch": self.arch,
            "CPU": {"Model": self.cpu_model, "Count": self.cpu_count},
            "Memory": self.memory,
            "Firmware": self.firmware,
            "DMI": {
                "Vendor": self.dmi_vendor,
                "Product": self.dmi_product,
                "Serial": self.dmi_serial,
            },
            "Disks": [d.to_json() for d in self.disks],
            "NICs": [n.to_json() for n in self.nics],
        }


@dataclass(frozen=True)
class Progress:
    """Bytes of an image written so far (POST /machine/{mac}/progress)."""

    image: str
    written: int
    total: int

    def to_json(self) -> dict[str, Any]:
        return {"Image": self.image, "Written": self.written, "Total": self.total}


# POST /log's Origin for an erase's steps, which pxed keeps as events too.
ERASE_ORIGIN = "erase"


@dataclass(frozen=True)
class LogLine:
    """A line for pxed's log of the machine (POST /log)."""

    level: str
    message: str
    origin: str = "mgmtos"

    def to_json(self) -> dict[str, Any]:
        return {
            "Level": self.level,
            "Message": clean_text(self.message, MAX_LOG),
            "Origin": self.origin,
        }


@dataclass(frozen=True)
class Complete:
    """The end of the work (POST /machine/{mac}/boot/complete)."""

    success: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"Success": self.success, "Message": clean_text(self.message, MAX_COMPLETE)}


@dataclass(frozen=True)
class UploadAnswer:
    """pxed's answer to an upload (asked for as JSON): the version stored."""

    uuid: str
    version: int | None
    size: int | None
    sha256: str | None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> UploadAnswer:
        data = _object(data, "upload answer")
        return cls(
            uuid=str(_get(data, "UUID") or ""),
            version=_opt_int(_get(data, "Version"), "Version"),
            size=_opt_int(_get(data, "Size"), "Size"),
            sha256=_opt_str(_get(data, "Sha256"), "Sha256"),
            extra=data,
        )
