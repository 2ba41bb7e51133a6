"""Power control for operators: GET and POST /machine/{mac}/power, and the
``Power`` settings that PUT /machine/{mac} takes."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from twisted.web.iweb import IRequest

from pxed.db import power as power_db
from pxed.db.power import NO_POWER, PowerSettings
from pxed.errors import BadRequest
from pxed.power import PowerError
from pxed.power.ipmi import MAX_PASSWORD, host_port
from pxed.power.redfish import base_url
from pxed.power.service import PowerService
from pxed.web.auth import actor
from pxed.web.body import Fields, read_json
from pxed.web.leasehold import check_lease
from pxed.web.lookup import machine_or_404
from pxed.web.router import route

ACTIONS = ("on", "off", "cycle")


def choice(body: Fields, name: str, allowed: tuple[str, ...], required: bool = False) -> str | None:
    """One of *allowed* (any case), or None when absent."""
    value = body.str(name, required=required, max_length=32)
    if value is None:
        return None
    if value.lower() not in allowed:
        raise BadRequest(f"{name}: must be one of {', '.join(allowed)}")
    return value.lower()


def power_settings(body: Fields, seal: Callable[[str], str]) -> tuple[PowerSettings, bool] | None:
    """The ``Power`` object of a machine body: (settings with the password
    sealed by *seal*, whether the stored password stays), or None when the
    body has none.  ``"Power": null`` or ``{"Driver": "none"}`` removes
    them.  A Password left out keeps the stored one, so an answer sent
    back as it is changes nothing; ``"Password": ""`` removes it."""
    if not body.has("Power"):
        return None
    if body.raw("Power") is None:
        return NO_POWER, False
    power = body.object("Power")
    assert power is not None
    driver = _choice_in(power, "Driver", power_db.DRIVERS, required=True)
    if driver == "none":
        return NO_POWER, False
    address = (_str_in(power, "Address", required=True) or "").strip()
    _check_address(driver, address)
    password = _str_in(power, "Password")
    if driver == "ipmi" and password and len(password.encode()) > MAX_PASSWORD:
        raise BadRequest(f"Power.Password: IPMI passwords are at most {MAX_PASSWORD} bytes")
    verify = power.bool("VerifyTLS") if power.has("VerifyTLS") else None
    settings = PowerSettings(
        driver=driver,
        address=address,
        username=_str_in(power, "Username") or "",
        password_sealed=seal(password) if password else "",
        system=(_str_in(power, "System") or "").strip(),
        verify_tls=True if verify is None else verify,
        on_queue=_choice_in(power, "OnQueue", power_db.ON_QUEUE) or "none",
        after=_choice_in(power, "After", power_db.AFTER) or "none",
    )
    return settings, password is None


def _str_in(power: Fields, name: str, required: bool = False) -> str | None:
    try:
        return power.str(name, required=required)
    except BadRequest as e:  # named as the client wrote it: Power.Address
        raise BadRequest(f"Power.{e.message}") from None


def _choice_in(
    power: Fields, name: str, allowed: tuple[str, ...], required: bool = False
) -> str | None:
    try:
        return choice(power, name, allowed, required)
    except BadRequest as e:
        raise BadRequest(f"Power.{e.message}") from None


def _check_address(driver: str, address: str) -> None:
    if driver == "redfish":
        parts = urlsplit(base_url(address))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(
                "Power.Address: the BMC's Redfish URL, e.g. https://10.0.0.21 (got"
                f" {address[:80]!r})"
            )
        return
    try:
        host_port(address)
    except PowerError as e:
        raise BadRequest(f"Power.{e}") from None


class PowerResource:
    def __init__(self, db, power: PowerService) -> None:
        self._db = db
        self._power = power

    @route("/machine/<mac>/power", ["GET"], access="admin-or-worker")
    async def get_power(self, request: IRequest, mac: str) -> dict:
        machine = await machine_or_404(self._db, mac)
        await check_lease(self._db, request, machine)
        state = await self._power.state(machine)
        return {"Mac": machine.macs[0], "Driver": machine.power.driver, "State": state}

    @route("/machine/<mac>/power", ["POST"], access="admin-or-worker")
    async def set_power(self, request: IRequest, mac: str) -> dict:
        body = read_json(request)
        action = choice(body, "Action", ACTIONS, required=True)
        assert action is not None
        machine = await machine_or_404(self._db, mac)
        await check_lease(self._db, request, machine)
        state = await self._power.act(machine, action, actor(request))  # type: ignore[arg-type]
        return {
            "Mac": machine.macs[0],
            "Driver": machine.power.driver,
            "Action": action,
            "State": state,
        }
