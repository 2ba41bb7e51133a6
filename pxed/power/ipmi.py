"""IPMI 2.0 over lanplus with pyghmi (``pyghmi.ipmi.command.Command``):
``chassis power on/off/cycle``, ``chassis bootdev pxe|disk`` for the next
boot only.

pyghmi is blocking, so each action runs on a thread pool of its own; the
power service bounds the wait.  pyghmi keeps a session per BMC open (with
keepalives) and hands it to the next ``Command`` for the same BMC and
credentials.  Two things of pyghmi 1.6 shape the calls: credentials go in
as bytes (its session cache compares them with its stored bytes; given as
str, a second Command finds the first still "logging in" and waits
forever), and sessions are not logged out (a logged-out session stays in
the cache and fails the next Command)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pxed.power import BootTarget, PowerError, PowerTimeout, State
from pxed.workers import ThreadPoolService

BOOT_DEVICES = {"pxe": "network", "disk": "hd"}
DEFAULT_PORT = 623
# IPMI 2.0 user passwords are at most 20 bytes.
MAX_PASSWORD = 20


class IPMIPool(ThreadPoolService):
    """Where pyghmi's blocking calls run (never the reactor, never the IO
    pool: a BMC that does not answer holds a thread until pyghmi gives up)."""

    def __init__(self, reactor, threads: int = 4) -> None:
        super().__init__(reactor, threads, "pxed-ipmi")


def host_port(address: str) -> tuple[str, int]:
    """``bmc.example``, ``10.0.0.22:6230``, ``[fd00::22]:623``."""
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.lstrip(":")
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    if not host:
        raise PowerError("Address: no BMC host given")
    try:
        return host, int(port) if port else DEFAULT_PORT
    except ValueError:
        raise PowerError(f"Address: {port!r} is not a port number") from None


class IPMIDriver:
    def __init__(self, pool: ThreadPoolService, address: str, username: str, password: str) -> None:
        self._pool = pool
        self._host, self._port = host_port(address)
        self._username = username
        self._password = password

    async def state(self) -> State:
        found = await self._run(lambda c: c.get_power())
        state = str(found.get("powerstate", "")).lower()
        return state if state in ("on", "off") else "unknown"  # type: ignore[return-value]

    async def power_on(self) -> None:
        await self._run(lambda c: c.set_power("on", wait=False))

    async def power_off(self) -> None:
        await self._run(lambda c: c.set_power("off", wait=False))

    async def power_cycle(self) -> None:
        # pyghmi's "boot": on if off, a hard reset if on.
        await self._run(lambda c: c.set_power("boot", wait=False))

    async def boot_once(self, target: BootTarget) -> None:
        await self._run(lambda c: c.set_bootdev(BOOT_DEVICES[target], persist=False))

    async def _run(self, action: Callable[[Any], Any]) -> Any:
        found = await self._pool.run(self._session, action)
        return found if isinstance(found, dict) else {}

    def _session(self, action: Callable[[Any], Any]) -> Any:
        """On a pool thread: log in, act, log out."""
        from pyghmi import exceptions
        from pyghmi.ipmi import command

        where = f"IPMI {self._host}:{self._port}"
        try:
            cmd = command.Command(
                bmc=self._host,
                userid=self._username.encode(),
                password=self._password.encode(),
                port=self._port,
            )
        except exceptions.IpmiException as e:
            raise _failure(where, e) from None
        except OSError as e:  # an unresolvable name, an unreachable network
            raise PowerError(f"{where}: {e.strerror or e}") from None
        except Exception as e:  # pyghmi's own failures: a reason, not a 500
            raise PowerError(f"{where}: {type(e).__name__}: {str(e)[:200]}") from None
        try:
            found = action(cmd)
        except exceptions.IpmiException as e:
            raise _failure(where, e) from None
        except Exception as e:
            raise PowerError(f"{where}: {type(e).__name__}: {str(e)[:200]}") from None
        if isinstance(found, dict) and "error" in found:
            raise _failure(where, Exception(str(found["error"])))
        return found


def _failure(where: str, e: Exception) -> PowerError:
    text = str(e) or type(e).__name__
    # pyghmi says "timeout" for a BMC that never answered, or, when its
    # session gave up waiting first, "Session no longer connected".
    lowered = text.lower()
    if any(s in lowered for s in ("timeout", "timed out", "no longer connected")):
        return PowerTimeout(f"{where}: no answer ({text[:200]})")
    return PowerError(f"{where}: {text[:300]}")
