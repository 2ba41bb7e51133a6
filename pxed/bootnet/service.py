"""The running dnsmasq: pxed's child process while ``boot_dhcp = "proxy"``.

Started after the web port (iPXE is chained to its URL, whose port may be
known only once it listens) and so, in pxed's reverse stop order, stopped
first: no machine is pointed at a pxed that is going away.  Its log lines
(``--log-facility=-``: stderr) go to pxed's log under
``pxed.bootnet.dnsmasq``.  When it exits pxed logs the exit code and
starts it again after a backoff (1 s, doubling to 60 s; back to 1 s once
it has run for a minute); ``state`` is what /healthz shows.

The MACs of registered machines are dnsmasq's known hosts: after a write
that adds or removes one (this server's, or another's heard by NOTIFY),
and every ``boot_view_refresh`` seconds for edits outside pxed, the list
is read again, and when it differs the file is rewritten and dnsmasq sent
SIGHUP, which makes it read the file again without a restart."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import sqlalchemy as sa
from twisted.application.service import Service
from twisted.internet import protocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from pxed.bootnet import dnsmasqconf
from pxed.bootnet.dnsmasqconf import BootNet
from pxed.bootnet.prepare import Prepared, write_atomically, write_conf
from pxed.config import Config
from pxed.db import schema
from pxed.db.pool import DBPool

log = Logger()
dnsmasq_log = Logger(namespace="pxed.bootnet.dnsmasq")

STARTING, RUNNING, RESTARTING, FAILED, STOPPED = (
    "starting",
    "running",
    "restarting",
    "failed",
    "stopped",
)
# The writes after which the known MACs are read again (pxed.db.written).
DEPENDS = frozenset({"machine_macs", "machines:delete"})
FIRST_DELAY = 1.0
MAX_DELAY = 60.0
# Seconds dnsmasq must run for its next exit to count as a first one.
STABLE = 60.0
# Exits in a row, each within STABLE seconds of its start, after which the
# state is "failed" (pxed keeps trying, every MAX_DELAY seconds).
FAILED_AFTER = 5
# Seconds between SIGTERM and SIGKILL when pxed stops.
STOP_TIMEOUT = 5.0


def thd_known_macs(conn: sa.Connection) -> list[str]:
    return list(conn.execute(sa.select(schema.machine_macs.c.mac)).scalars())


class BootNetwork(Service):
    name = "bootnet"

    def __init__(
        self,
        config: Config,
        prepared: Prepared,
        db: DBPool,
        reactor,
        listening: Deferred[IListeningPort],
    ) -> None:
        self._config = config
        self._prepared = prepared
        self._db = db
        self._reactor = reactor
        self._port: int | None = None
        self._bootnet: BootNet | None = None
        self._process: _Dnsmasq | None = None
        self._restart = None  # the pending restart's DelayedCall
        self._exits = 0  # in a row, each soon after its start
        self._state = STOPPED
        self._known: str | None = None  # the known-MAC file's text
        self._refreshing: Deferred[None] | None = None
        self._again = False
        self._hup_pending = False
        self._loop: LoopingCall | None = None
        # Our own Deferred, so that others awaiting `listening` change
        # nothing we see.
        self._listening: Deferred[int] = Deferred()
        listening.addCallback(self._listened)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self._listening.callback(port.getHost().port)
        return port

    # --- what /healthz asks ----------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    @property
    def bootnet(self) -> BootNet | None:
        """The configuration dnsmasq runs with (None until it has started)."""
        return self._bootnet

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.transport.pid if process is not None and process.transport else None

    # --- start and stop ----------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._state = STARTING
        self._db.watch(DEPENDS, self.changed)
        self._listening.addCallback(self._start)
        self._listening.addErrback(lambda f: log.failure("boot network", f))

    async def _first(self, port: int) -> None:
        self._port = port
        self._bootnet = self._prepared.with_port(port, self._config)
        write_conf(self._bootnet)
        await self.refresh()
        if self.running:
            log.info(
                "boot network: proxyDHCP and TFTP on {interface} ({address}) for {networks};"
                " iPXE chains to {url}",
                interface=self._bootnet.interface,
                address=str(self._bootnet.address),
                networks=", ".join(map(str, self._bootnet.networks)),
                url=self._bootnet.chain_url,
            )
            self._spawn()
            self._loop = LoopingCall(self._refresh_in_background)
            self._loop.clock = self._reactor
            self._loop.start(self._config.boot_view_refresh, now=False)

    def _start(self, port: int) -> Deferred[None]:
        return Deferred.fromCoroutine(self._first(port))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._db.unwatch(self.changed)
        self._state = STOPPED
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        process, self._process = self._process, None
        if process is None:
            return succeed(None)
        return process.stop(self._reactor)

    def _spawn(self) -> None:
        assert self._bootnet is not None
        command = self._prepared.command
        conf = self._bootnet.directory / dnsmasqconf.CONF
        args = [
            command,
            "--keep-in-foreground",
            "--log-facility=-",
            "--pid-file",  # none: pxed holds its pid
            f"--conf-file={conf}",
        ]
        process = _Dnsmasq(self._ended, self._ready)
        try:
            self._reactor.spawnProcess(process, command, args, env={"LC_ALL": "C"})
        except OSError as e:
            log.error("boot network: cannot start {command}: {e}", command=command, e=e)
            self._ended(process, None, f"cannot start: {e}")
            return
        process.started = self._reactor.seconds()
        self._process = process
        self._state = RUNNING

    def _ready(self, process: _Dnsmasq) -> None:
        """dnsmasq has said it started: its SIGHUP handler is in place."""
        if self._hup_pending and process is self._process:
            self._hup_pending = False
            process.hangup()

    def _ended(self, process: _Dnsmasq, code: int | None, how: str) -> None:
        if process is not self._process and self._process is not None:
            return
        self._process = None
        if not self.running:
            return
        ran = self._reactor.seconds() - process.started if process.started else 0.0
        self._exits = 1 if ran >= STABLE else self._exits + 1
        delay = min(FIRST_DELAY * 2 ** (self._exits - 1), MAX_DELAY)
        self._state = FAILED if self._exits >= FAILED_AFTER else RESTARTING
        log.error(
            "boot network: dnsmasq {how} after {ran:.1f} s{last}; starting it again in"
            " {delay:.0f} s",
            how=how,
            code=code,
            ran=ran,
            last=f" (its last line: {process.last})" if process.last else "",
            delay=delay,
        )
        self._restart = self._reactor.callLater(delay, self._spawn)

    # --- the known MACs -------------------------------------------------------------
    def changed(self, _written: Iterable[str] = ()) -> None:
        """A machine or MAC was added or removed, here or elsewhere."""
        if self.running and self._bootnet is not None:
            self._refresh_in_background()

    def _refresh_in_background(self) -> None:
        self.refresh().addErrback(lambda f: log.failure("boot network: reading the known MACs", f))

    def refresh(self) -> Deferred[None]:
        """Read the known MACs; rewrite the file and tell dnsmasq if they
        changed.  Coalesced: one read at a time, changes meanwhile make one
        more."""
        if self._refreshing is not None:
            self._again = True
            waiter: Deferred[None] = Deferred()
            self._refreshing.addBoth(lambda r: (waiter.callback(None), r)[1])
            return waiter
        self._refreshing = Deferred.fromCoroutine(self._refresh())

        def done(result: object) -> object:
            self._refreshing = None
            if self._again:
                self._again = False
                self._refresh_in_background()
            return result

        self._refreshing.addBoth(done)
        return self._refreshing

    async def _refresh(self) -> None:
        assert self._bootnet is not None
        macs = await self._db.read(thd_known_macs)
        text = dnsmasqconf.known_macs(macs)
        if text == self._known:
            return
        write_atomically(self._bootnet.directory / dnsmasqconf.KNOWN, text)
        first = self._known is None
        self._known = text
        if first:
            return
        process = self._process
        if process is not None and process.ready:
            process.hangup()
        else:
            self._hup_pending = True  # read by a dnsmasq starting now, or not


class _Dnsmasq(protocol.ProcessProtocol):
    """One run of dnsmasq: its lines to the log."""

    def __init__(self, ended, ready) -> None:
        self._ended_cb = ended
        self._ready_cb = ready
        self._partial = b""
        self.last = ""
        self.started = 0.0
        self.ready = False
        self._done: Deferred[None] = Deferred()
        self._kill = None

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.errReceived(data)

    def errReceived(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            self.last = line
            dnsmasq_log.info("{line}", line=line)
            if not self.ready and ": started, version" in line:
                self.ready = True
                self._ready_cb(self)

    def hangup(self) -> None:
        with contextlib.suppress(ProcessExitedAlready, AttributeError):
            self.transport.signalProcess("HUP")

    def stop(self, reactor) -> Deferred[None]:
        """SIGTERM, then SIGKILL if it has not gone after STOP_TIMEOUT."""
        with contextlib.suppress(ProcessExitedAlready):
            self.transport.signalProcess("TERM")
        if not self._done.called:
            self._kill = reactor.callLater(STOP_TIMEOUT, self._force)
        waiter: Deferred[None] = Deferred()
        self._done.addBoth(lambda r: (waiter.callback(None), r)[1])
        return waiter

    def _force(self) -> None:
        log.warn("boot network: dnsmasq did not stop in {t:.0f} s: killing it", t=STOP_TIMEOUT)
        with contextlib.suppress(ProcessExitedAlready):
            self.transport.signalProcess("KILL")

    def processEnded(self, reason: Failure) -> None:
        if self._kill is not None and self._kill.active():
            self._kill.cancel()
        value = reason.value
        code, signal = getattr(value, "exitCode", None), getattr(value, "signal", None)
        how = f"was killed by signal {signal}" if signal else f"exited with code {code}"
        self._ended_cb(self, code, how)
        self._done.callback(None)
