"""Redfish (DMTF DSP0266) over treq: ``ComputerSystem.Reset`` for power and
a one-time ``Boot`` override for the next boot.  Works with iDRAC, iLO,
XClarity, OpenBMC and sushy-tools' emulator alike: the reset action's
target and the reset types it allows are read from the system resource,
not assumed."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError
from twisted.internet.ssl import CertificateOptions
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from pxed.power import BootTarget, PowerError, PowerTimeout, State

SYSTEMS = "/redfish/v1/Systems"
BOOT_TARGETS = {"pxe": "Pxe", "disk": "Hdd"}


@implementer(IPolicyForHTTPS)
class NoVerification:
    """TLS without checking the BMC's certificate: the per-machine opt-out
    (VerifyTLS false) for BMCs with their factory self-signed certificate."""

    def creatorForNetloc(self, hostname: bytes, port: int):
        return CertificateOptions(verify=False)


def make_client(reactor, verify: bool) -> HTTPClient:
    # Not persistent: power calls are rare, and a BMC's idle connection is
    # one of the few it allows.
    pool = HTTPConnectionPool(reactor, persistent=False)
    if verify:
        return HTTPClient(Agent(reactor, pool=pool))
    return HTTPClient(Agent(reactor, contextFactory=NoVerification(), pool=pool))


def base_url(address: str) -> str:
    """``https://10.0.0.21`` from ``10.0.0.21``; an explicit http:// stays."""
    address = address.strip().rstrip("/")
    if "://" not in address:
        address = "https://" + address
    return address


class RedfishDriver:
    def __init__(
        self,
        client: HTTPClient,
        address: str,
        username: str,
        password: str,
        system: str,
        timeout: float,
    ) -> None:
        self._client = client
        self._base = base_url(address)
        self._auth = (username, password) if username else None
        self._system = system
        self._timeout = timeout
        self._path: str | None = None

    # -- the interface -----------------------------------------------------

    async def state(self) -> State:
        found = str((await self._get(await self._system_path())).get("PowerState", "")).lower()
        if found in ("on", "poweringoff"):
            return "on"
        if found in ("off", "poweringon"):
            return "off"
        return "unknown"

    async def power_on(self) -> None:
        await self._reset("On")

    async def power_off(self) -> None:
        await self._reset("ForceOff")

    async def power_cycle(self) -> None:
        system = await self._get(await self._system_path())
        if str(system.get("PowerState", "")).lower() == "off":
            await self._reset("On", system)
            return
        allowed = _reset_action(system).get("ResetType@Redfish.AllowableValues") or []
        await self._reset("PowerCycle" if "PowerCycle" in allowed else "ForceRestart", system)

    async def boot_once(self, target: BootTarget) -> None:
        body = {
            "Boot": {
                "BootSourceOverrideTarget": BOOT_TARGETS[target],
                "BootSourceOverrideEnabled": "Once",
            }
        }
        await self._request("PATCH", await self._system_path(), body)

    # -- Redfish -----------------------------------------------------------

    async def _system_path(self) -> str:
        """The ComputerSystem's path: the one named by System, else the
        only member of the Systems collection."""
        if self._path is not None:
            return self._path
        if self._system:
            system = self._system.strip("/")
            self._path = "/" + system if system.startswith("redfish/") else f"{SYSTEMS}/{system}"
            return self._path
        members = (await self._get(SYSTEMS)).get("Members") or []
        paths = [m.get("@odata.id") for m in members if isinstance(m, dict)]
        paths = [p for p in paths if isinstance(p, str)]
        if len(paths) != 1:
            names = ", ".join(p.rsplit("/", 1)[-1] for p in paths) or "none"
            raise PowerError(f"the BMC lists {len(paths)} systems ({names}): set System to one")
        self._path = paths[0]
        return self._path

    async def _reset(self, reset_type: str, system: dict | None = None) -> None:
        path = await self._system_path()
        if system is None:
            system = await self._get(path)
        target = _reset_action(system).get("target") or f"{path}/Actions/ComputerSystem.Reset"
        await self._request("POST", target, {"ResetType": reset_type})

    async def _get(self, path: str) -> dict:
        return await self._request("GET", path)

    async def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        url = self._base + path if path.startswith("/") else path
        what = f"{method} {urlsplit(url).path}"
        kwargs: dict[str, Any] = {
            "timeout": self._timeout,
            "headers": {"Accept": "application/json"},
        }
        if self._auth is not None:
            kwargs["auth"] = self._auth
        if body is not None:
            kwargs["json"] = body
        try:
            response = await self._client.request(method, url, **kwargs)
            content = await response.content()
        except Exception as e:
            if _cancelled(e):  # treq's timeout, while connecting or waiting
                raise PowerTimeout(f"{what}: no answer within {self._timeout:g} s") from None
            raise _failure(e, what, self._base, url) from None
        if response.code >= 400:
            raise PowerError(f"{what}: HTTP {response.code}{_redfish_message(content)}")
        if not content.strip():
            return {}
        try:
            found = json.loads(content)
        except ValueError:
            raise PowerError(f"{what}: the BMC answered something that is not JSON") from None
        return found if isinstance(found, dict) else {}


def _cancelled(e: Exception) -> bool:
    if isinstance(e, CancelledError | net_error.ConnectingCancelledError):
        return True
    reasons = getattr(e, "reasons", None) or []
    return any(r.check(CancelledError) for r in reasons)


def _failure(e: Exception, what: str, base: str, url: str) -> PowerError:
    if isinstance(e, net_error.ConnectionRefusedError):
        return PowerError(f"{what}: connection refused by {base}")
    if isinstance(e, net_error.DNSLookupError):
        return PowerError(f"{what}: cannot resolve {urlsplit(url).hostname}")
    if isinstance(e, net_error.ConnectError | ResponseFailed):
        return PowerError(f"{what}: {_reason(e)}")
    return PowerError(f"{what}: {type(e).__name__}: {str(e)[:300]}")


def _reset_action(system: dict) -> dict:
    actions = system.get("Actions")
    action = actions.get("#ComputerSystem.Reset") if isinstance(actions, dict) else None
    return action if isinstance(action, dict) else {}


def _redfish_message(content: bytes) -> str:
    """The BMC's own message from a Redfish error body, if it has one."""
    try:
        error = json.loads(content).get("error", {})
    except (ValueError, AttributeError):
        return ""
    if not isinstance(error, dict):
        return ""
    messages = [
        str(m.get("Message"))
        for m in error.get("@Message.ExtendedInfo") or []
        if isinstance(m, dict) and m.get("Message")
    ]
    text = "; ".join(messages) or str(error.get("message") or "")
    return f": {text[:300]}" if text else ""


def _reason(e: Exception) -> str:
    """A connection or TLS failure in a line (ResponseFailed wraps a list)."""
    reasons = getattr(e, "reasons", None)
    if reasons:
        return "; ".join(str(r.value)[:200] for r in reasons)
    return str(e)[:300] or type(e).__name__
