"""Power control of machines through their BMCs.

One small interface (``PowerDriver``), one driver per protocol
(``redfish.py`` over treq, ``ipmi.py`` with pyghmi on a thread pool), and
one choke point that every power action goes through (``service.py``:
timeouts, retries, events).  A driver's calls return Deferreds and never
block the reactor; they raise ``PowerError`` with a message fit for the
operator (never one holding the password)."""

from __future__ import annotations

from typing import Literal, Protocol

BootTarget = Literal["pxe", "disk"]
State = Literal["on", "off", "unknown"]


class PowerError(Exception):
    """The BMC refused or failed a power action; the message says why."""


class PowerTimeout(PowerError):
    """The BMC did not answer within the power timeout."""


class PowerDriver(Protocol):
    async def power_on(self) -> None: ...

    async def power_off(self) -> None: ...

    async def power_cycle(self) -> None:
        """Off and on again; a machine that is off is powered on."""

    async def state(self) -> State: ...

    async def boot_once(self, target: BootTarget) -> None:
        """Boot from the network (pxe) or the local disk on the next boot only."""
