"""Shapes of things in responses, in the seed's field names."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pxed.db.events import Event
from pxed.db.machines import Machine
from pxed.db.users import Token, User


def iso(when: dt.datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def machine(m: Machine) -> dict[str, Any]:
    # "name" is lower case in the seed's machine examples (its Go struct tag).
    return {
        "name": m.name,
        "Architecture": m.architecture,
        "Managed": m.managed,
        "MacAddresses": [{"Mac": mac} for mac in m.macs],
        "ImageUUID": m.image_uuid,
        "State": m.state,
        "LastSeen": iso(m.last_seen),
        "CreatedAt": iso(m.created_at),
    }


def event(e: Event) -> dict[str, Any]:
    return {
        "ID": e.id,
        "At": iso(e.at),
        "Actor": e.actor,
        "Action": e.action,
        "TargetType": e.target_type,
        "Target": e.target,
        "Detail": e.detail,
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
