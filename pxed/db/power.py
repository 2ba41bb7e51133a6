"""Machines' power settings (how pxed reaches each BMC) and the events of
power actions.  The password is only ever handled sealed here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa

from pxed.db import events
from pxed.db.schema import machine_power

DRIVERS = ("redfish", "ipmi", "none")
ON_QUEUE = ("cycle", "on", "none")
AFTER = ("reboot", "poweroff", "none")


@dataclass(frozen=True)
class PowerSettings:
    driver: str
    address: str = ""
    username: str = ""
    # AES-GCM sealed (pxed.power.secretbox); repr=False keeps it out of any
    # log line that prints the settings.
    password_sealed: str = field(default="", repr=False)
    system: str = ""
    verify_tls: bool = True
    on_queue: str = "none"
    after: str = "none"

    @property
    def enabled(self) -> bool:
        return self.driver != "none"


# None: no BMC; the same as a row with driver "none".
NO_POWER = PowerSettings("none")


def load(conn: sa.Connection, machine_ids: Iterable[int]) -> dict[int, PowerSettings]:
    """The settings of the machines of *machine_ids* that have any."""
    wanted = sorted(set(machine_ids))
    if not wanted:
        return {}
    rows = conn.execute(sa.select(machine_power).where(machine_power.c.machine_id.in_(wanted)))
    return {
        r.machine_id: PowerSettings(**{k: v for k, v in r._mapping.items() if k != "machine_id"})
        for r in rows
    }


def thd_get(conn: sa.Connection, machine_id: int) -> PowerSettings:
    return load(conn, [machine_id]).get(machine_id, NO_POWER)


def thd_set(
    conn: sa.Connection, machine_id: int, settings: PowerSettings, actor: str, keep_password: bool
) -> None:
    """Replace the machine's settings (with *keep_password*, the password
    stored stays when the new settings bring none)."""
    old = thd_get(conn, machine_id)
    if keep_password and not settings.password_sealed:
        settings = _with_password(settings, old.password_sealed)
    conn.execute(machine_power.delete().where(machine_power.c.machine_id == machine_id))
    if settings.enabled:
        values = {f: getattr(settings, f) for f in settings.__dataclass_fields__}
        conn.execute(machine_power.insert().values(machine_id=machine_id, **values))
    # The password is never in an event: only whether one is set.
    detail = (
        f"driver={settings.driver} address={settings.address} username={settings.username}"
        f" system={settings.system} verify_tls={settings.verify_tls}"
        f" on_queue={settings.on_queue} after={settings.after}"
        f" password={'set' if settings.password_sealed else 'none'}"
    )
    events.thd_record(conn, actor, "power.settings", "machine", str(machine_id), detail)


def _with_password(settings: PowerSettings, sealed: str) -> PowerSettings:
    values = {f: getattr(settings, f) for f in settings.__dataclass_fields__}
    return PowerSettings(**(values | {"password_sealed": sealed}))


def thd_record(conn: sa.Connection, machine_id: int, who: str, action: str, outcome: str) -> None:
    """A power action and its outcome, on the machine's events."""
    events.thd_record(conn, who, f"power.{action}", "machine", str(machine_id), outcome)
