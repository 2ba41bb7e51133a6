"""Shapes of things in responses, in the seed's field names."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pxed.agent.wire import DiskHints
from pxed.db.events import Event
from pxed.db.hardware import Hardware
from pxed.db.images import Image, Version
from pxed.db.leases import Lease
from pxed.db.machines import Machine
from pxed.db.power import PowerSettings
from pxed.db.progress import Progress
from pxed.db.queue import LogLine, Work
from pxed.db.setups import Setup
from pxed.db.sshkeys import SSHKey
from pxed.db.tokens import Token
from pxed.db.users import User


def iso(when: dt.datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def machine(m: Machine) -> dict[str, Any]:
    """The original's ``MachineModel`` (Name, Architecture, Managed,
    MacAddress {Address}: the first MAC, ImageUUID), and pxed's additions
    beside them: every MAC (``MacAddresses``), state and times."""
    return {
        "Name": m.name,
        "Architecture": m.architecture,
        "Managed": m.managed,
        "MacAddress": {"Address": m.macs[0] if m.macs else ""},
        "ImageUUID": m.image_uuid or "",
        "MacAddresses": [{"Mac": mac} for mac in m.macs],
        "State": m.state,
        "LastSeen": iso(m.last_seen),
        "CreatedAt": iso(m.created_at),
        "Power": power(m.power),
        # What is erased when another user's work comes, and whose data
        # the disks may hold (null: nobody's known).
        "Erase": m.erase,
        "LastUser": m.last_user,
        # When a lease of it ends: power off, re-image with the setup, or nothing.
        "LeaseEnd": m.lease_end,
        "LeaseSetupUUID": m.lease_setup_uuid,
    }


def power(p: PowerSettings) -> dict[str, Any]:
    """A machine's power settings; never its password, only whether one is set."""
    return {
        "Driver": p.driver,
        "Address": p.address,
        "Username": p.username,
        "System": p.system,
        "VerifyTLS": p.verify_tls,
        "OnQueue": p.on_queue,
        "After": p.after,
        "PasswordSet": bool(p.password_sealed),
    }


def machine_with(m: Machine, current: Progress | None) -> dict[str, Any]:
    """A machine in GET /machines and GET /machine/{mac}: ``machine`` and
    where its current work is (``Progress``: null without work)."""
    return {**machine(m), "Progress": progress(current) if current is not None else None}


def progress(p: Progress) -> dict[str, Any]:
    """The current work's step and percentage (of all its images' bytes),
    and the image reported last."""
    return {
        "WorkID": p.work_id,
        "State": p.state,
        "Step": p.step,
        "Percent": p.percent,
        "Written": p.written,
        "Total": p.total,
        "Images": p.images,
        "ImagesWritten": p.images_written,
        "Image": p.image,
        "ImageWritten": p.image_written,
        "ImageTotal": p.image_total,
        "UpdatedAt": iso(p.updated_at),
    }


def hardware(h: Hardware, mac: str) -> dict[str, Any]:
    """A machine's inventory as stored, and when and by which boot it was
    sent."""
    return {"Mac": mac, "SeenAt": iso(h.seen_at), "Source": h.source, **h.data}


def event(e: Event) -> dict[str, Any]:
    return {
        "ID": e.id,
        "At": iso(e.at),
        "Actor": e.actor,
        "Action": e.action,
        "TargetType": e.target_type,
        "Target": e.target,
        "Detail": e.detail,
        # Repeats counted in this event (boot answers), and the last one.
        "Count": e.count,
        "LastAt": iso(e.last_at),
    }


def user(u: User) -> dict[str, Any]:
    return {
        "Username": u.username,
        "Name": u.name,
        "Email": u.email,
        "Role": u.role,
        "GitHub": u.github_id is not None,
        "CreatedAt": iso(u.created_at),
    }


def token(t: Token, secret: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ID": t.id,
        "Name": t.name,
        "Prefix": t.prefix,
        "CreatedAt": iso(t.created_at),
        "ExpiresAt": iso(t.expires_at),
        "LastUsedAt": iso(t.last_used_at),
    }
    if secret is not None:
        out["Token"] = secret
    return out


def lease(x: Lease, now: dt.datetime | None = None) -> dict[str, Any]:
    return {
        "ID": x.id,
        "Machine": x.machine,
        "User": x.holder,
        "Start": iso(x.starts_at),
        "End": iso(x.ends_at),
        "State": x.state(now or dt.datetime.now(dt.UTC)),
        "Reservation": x.reservation,
        "CreatedAt": iso(x.created_at),
        "EndedAt": iso(x.ended_at),
    }


def ssh_key(k: SSHKey) -> dict[str, Any]:
    return {
        "ID": k.id,
        "Key": k.line,
        "Type": k.type,
        "Comment": k.comment,
        "Fingerprint": k.fingerprint,
        "Bits": k.bits,
        "CreatedAt": iso(k.created_at),
    }


def version(v: Version, image_uuid: str) -> dict[str, Any]:
    """The original's ``Version`` {Version, ImageModelUUID}, and pxed's
    size, checksum, time and origin beside them."""
    return {
        "Version": v.version,
        "ImageModelUUID": image_uuid,
        "Size": v.size,
        "Sha256": v.sha256,
        "CreatedAt": iso(v.created_at),
        "Origin": v.origin,
        # null until the chunk store has indexed it (pxed.chunker).
        "Chunks": None
        if v.chunks is None
        else {
            "Count": v.chunks,
            "UniqueBytes": v.chunk_bytes,
            "SharedWithParentBytes": v.shared_bytes,
        },
    }


def image(i: Image) -> dict[str, Any]:
    """The original's ``ImageModel`` (its Go struct's JSON encoding: Name,
    Versions, UUID, Username, DiskCompressionStrategy, ImageFileType, Type,
    Checksum, Filesystem), and pxed's additions beside them."""
    latest = i.latest
    return {
        "UUID": i.uuid,
        "Name": i.name,
        "Username": i.owner or "",
        "Type": i.type,
        "DiskCompressionStrategy": i.compression,
        "ImageFileType": i.file_type,
        "Filesystem": i.filesystem,
        # The original's image-level checksum: the latest version's.
        "Checksum": latest.sha256 if latest is not None else "",
        "Versions": [version(v, i.uuid) for v in i.versions],
        "DiskUUID": i.disk_uuid,
        "Size": i.size,
        "CreatedAt": iso(i.created_at),
        "CloudInit": i.cloud_init,
        "Grow": i.grow,
    }


def frozen(i: Image, number: int, update: bool, hints: DiskHints | None = None) -> dict[str, Any]:
    """The original's ``ImageFrozen``: an image at one version, and whether
    the machine's disk is captured back into it; pxed's root device hints
    beside them (null: the disk by kernel name order)."""
    found = i.version(number)
    return {
        "Image": image(i),
        "Version": version(found, i.uuid)
        if found is not None
        else {"Version": number, "ImageModelUUID": i.uuid},
        "Update": update,
        "DiskHints": None if hints is None else hints.to_json(),
    }


def setup(s: Setup) -> dict[str, Any]:
    """The original's ``ImageSetup`` {Name, Images: [ImageFrozen…],
    Username, UUID}, and pxed's CreatedAt."""
    return {
        "Name": s.name,
        "Images": [frozen(s.image(e.image_uuid), e.version, e.update, e.hints) for e in s.entries],
        "Username": s.owner,
        "UUID": s.uuid,
        "CreatedAt": iso(s.created_at),
    }


def work(w: Work, mac: str) -> dict[str, Any]:
    """A queue entry as the original's ``BootSetup`` {Machine, MachineMAC,
    Setup: ImageSetup, SetupUUID, Update} (the setup as it was frozen when
    queued), and pxed's additions beside them: its ID, state, message,
    times and the flat ``Images`` list."""
    images = [frozen(w.models[i.image_uuid], i.version, i.update, i.hints) for i in w.images]
    out: dict[str, Any] = {
        "Machine": machine(w.machine) if w.machine is not None else None,
        "MachineMAC": mac,
        "Setup": {
            "Name": w.setup_name,
            "Images": images,
            "Username": w.owner,
            "UUID": w.setup_uuid or "",
        },
        "SetupUUID": w.setup_uuid or "",
        "Update": w.update,
        "ID": w.id,
        "Mac": mac,
        "Name": w.setup_name,
        "Username": w.owner,
        "State": w.state,
        "Message": w.message,
        "CreatedAt": iso(w.created_at),
        "StartedAt": iso(w.started_at),
        "FinishedAt": iso(w.finished_at),
        "After": w.after,
        # The cloud-init seed as queued (null: as the images say) and
        # whether user-data came with it; the user-data is never shown.
        "Seed": w.seed,
        "HasUserData": w.has_user_data,
        # The erase asked for when queued, and (once taken) what the
        # management OS was told to erase and why.
        "EraseAsked": w.erase_asked,
        "Erase": w.erase,
        "EraseReason": w.erase_reason,
        "Images": [
            {
                "UUID": i.image_uuid,
                "Version": i.version,
                "Update": i.update,
                "DiskHints": None if i.hints is None else i.hints.to_json(),
            }
            for i in w.images
        ],
    }
    if len(w.images) == 1:
        # The seed's single-image SetBootSetup answer had these at the top.
        out["ImageUUID"] = w.images[0].image_uuid
        out["Version"] = w.images[0].version
    return out


def log_line(line: LogLine) -> dict[str, Any]:
    return {
        "ID": line.id,
        "At": iso(line.at),
        "Level": line.level,
        "Origin": line.origin,
        "Message": line.message,
    }
