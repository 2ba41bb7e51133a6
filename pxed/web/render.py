"""Shapes of things in responses, in the seed's field names."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pxed.db.events import Event
from pxed.db.machines import Machine


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
