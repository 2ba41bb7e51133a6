"""Builds the service tree.  Start order, written down once:

1. ``prepare``: the Twisted internals pxed relies on (pxed/web/twistedhttp.py),
   data dir, database schema (create / upgrade / refuse) — synchronously,
   before anything listens, so a bad start is one clear line.
2. DB pool service (its thread pool).
3. IO pool (file work: hashing, fsync, mkfs), then the chunker (indexes
   committed versions into the chunk store, collects unused chunks; it
   works through both pools, so it stops before them).
4. Docker engine pool, then the build worker (fails builds a stopped
   daemon left unfinished, then starts queued ones), then the importer
   (POST /image/{uuid}/import: its pool, then the service).
5. Boot view (pxed/boot/: every machine and its current work in memory;
   the boot answers come from it), the PostgreSQL listener that tells it of
   other servers' changes, and the boot answers' event log.
6. Power service (machines' BMCs; its IPMI thread pool), then the lease
   keeper (pxed/leasekeeper.py: ends leases, powering their machines off or
   re-imaging them through it; looks once at start).
7. The management OS: a missing one is built in the background
   (pxed/mgmtosbuild.py); the boot routes ask it whether it is building.
8. Web service (the listening port: Twisted's StreamServerEndpointService).
9. The boot network (``boot_dhcp = "proxy"``): dnsmasq as pxed's child
   (pxed/bootnet/), after the port, whose URL iPXE is chained to; so it
   stops first, before the port closes.

MultiService stops its children in reverse: the port closes first, then the
database threads finish their queries and drop their connections."""

from __future__ import annotations

import ctypes
import datetime as dt
import gc
import os
import tempfile
from dataclasses import dataclass

import sqlalchemy as sa
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pxed import imagestore
from pxed.boot.answerlog import AnswerLog
from pxed.boot.answers import BootAnswers
from pxed.boot.credentials import Credentials
from pxed.boot.key import machine_key
from pxed.boot.snapshot import DEPENDS as BOOT_DEPENDS
from pxed.boot.view import BootView
from pxed.bootnet import prepare as bootnet_prepare
from pxed.bootnet.service import DEPENDS as BOOTNET_DEPENDS
from pxed.bootnet.service import BootNetwork
from pxed.bootstrap import bootstrap_admin, power_key
from pxed.builder.engine import DockerEngine
from pxed.builder.worker import BuildWorker
from pxed.chunker import Chunker
from pxed.chunkstore import ChunkStore
from pxed.config import Config
from pxed.db import migrate, stats
from pxed.db.notify import ChangeListener
from pxed.db.pool import DBPool, make_engine
from pxed.eventfeed import TABLES as FEED_TABLES
from pxed.eventfeed import EventFeed
from pxed.imagestore import ImageStore
from pxed.imports import service as imports_service
from pxed.leasekeeper import LeaseKeeper
from pxed.metrics import Metrics
from pxed.mgmtosbuild import ManagementOS
from pxed.power.service import PowerService
from pxed.storage import Storage
from pxed.web import twistedhttp
from pxed.web.app import PxedApp
from pxed.web.origin import Origin
from pxed.web.site import PxedSite
from pxed.workers import IOPool

log = Logger()


class OrderedServices(MultiService):
    """MultiService starts children in order but stops them all at once;
    pxed's must stop one after another in reverse, each finished before the
    next goes (the build worker still needs the engine, IO and DB pools to
    wind its builds down)."""

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_in_reverse())

    async def _stop_in_reverse(self) -> None:
        for child in reversed(list(self)):
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                log.failure("stopping {service}", service=child.name)


class StartupError(Exception):
    """pxed cannot start; the message is the one line to show the operator."""


def _ensure_writable_dir(setting: str, path: os.PathLike | str) -> None:
    try:
        os.makedirs(path, mode=0o750, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise StartupError(
            f"{setting}: {path} is not a writable directory ({e.strerror})"
        ) from None


def _tune_malloc() -> None:
    """A fixed mmap threshold of 4 MiB: glibc's sliding threshold keeps
    raising itself as large buffers are freed, so the heap grows and stays
    grown.  Measured with bench/ (four concurrent 2 GiB uploads): peak RSS
    117 MB instead of 119-133, and the 1 MiB socket reads stay in the heap,
    reused, instead of costing an mmap and page faults each (upload 0.63x dd
    against 0.33x with a 128 KiB threshold)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:  # the operator's choice wins
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 4 * 1024 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def prepare(config: Config) -> sa.Engine:
    """Everything that must hold before pxed serves; raises StartupError."""
    _tune_malloc()
    try:
        twistedhttp.check()
    except twistedhttp.TwistedChanged as e:
        raise StartupError(str(e)) from None
    _ensure_writable_dir("data_dir", config.data_dir)
    try:
        engine = make_engine(config.database_url, config.db_busy_timeout)
    except Exception as e:  # a driver that is not installed, a bad URL
        raise StartupError(f"database: {e}") from None
    try:
        log.info("{what}", what=migrate.prepare(engine, migrate=config.migrate))
    except migrate.SchemaError as e:
        engine.dispose()
        raise StartupError(f"database: {e}") from None
    try:
        removed = Storage(config.data_dir, config.server).prepare()
    except OSError as e:
        raise StartupError(f"data_dir: cannot prepare the images directory: {e.strerror}") from None
    try:
        removed += ChunkStore(config.data_dir, config.chunk_size, config.server).prepare()
    except OSError as e:
        raise StartupError(f"data_dir: cannot prepare the chunk store: {e.strerror}") from None
    if removed:
        log.info("removed {n} unfinished upload(s) from staging", n=removed)
    try:
        swept = imagestore.sweep(engine, Storage(config.data_dir, config.server))
    except OSError as e:
        raise StartupError(f"data_dir: cannot clean the images directory: {e.strerror}") from None
    if swept:
        log.info("removed {n} image file(s) no version names", n=swept)
    try:
        with migrate.exclusive(engine):  # servers starting at once: one admin
            created = bootstrap_admin(engine, config.data_dir)
    except OSError as e:
        raise StartupError(f"data_dir: cannot write the admin token: {e.strerror}") from None
    except migrate.SchemaError as e:
        raise StartupError(f"database: {e}") from None
    if created is not None:
        username, path = created
        log.warn(
            "created admin user {username!r}; its API token is in {path} (mode 0600)",
            username=username,
            path=str(path.resolve()),
        )
    return engine


@implementer(IStreamServerEndpoint)
class AnnouncedEndpoint:
    """An endpoint that says where it listens: logs the address and fires
    ``listening`` with the port (tests read their ephemeral port there)."""

    def __init__(self, endpoint: IStreamServerEndpoint, description: str) -> None:
        self._endpoint = endpoint
        self._description = description
        self.listening: Deferred[IListeningPort] = Deferred()

    def listen(self, factory) -> Deferred[IListeningPort]:
        d = self._endpoint.listen(factory)
        d.addCallbacks(self._listened, self._failed)
        return d

    def _listened(self, port: IListeningPort) -> IListeningPort:
        log.info("pxed listening on {address}", address=port.getHost())
        self.listening.callback(port)
        return port

    def _failed(self, failure: Failure) -> Failure:
        self.listening.errback(failure)
        self.listening.addErrback(lambda _: None)  # reported by the service
        return failure


def web_service(description: str, site: PxedSite, reactor) -> StreamServerEndpointService:
    """The listening port, as Twisted's own service: twistd binds it in
    privilegedStartService, before it drops privileges, and a port that
    cannot be bound stops the start with the error."""
    endpoint = AnnouncedEndpoint(serverFromString(reactor, description), description)
    web = StreamServerEndpointService(endpoint, site)
    twistedhttp.raise_listen_errors(web)
    web.setName("web")
    return web


@dataclass
class Pxed:
    """The running parts, for the plugin and for tests."""

    service: MultiService
    db: DBPool
    app: PxedApp
    web: StreamServerEndpointService
    store: ImageStore | None = None
    builder: BuildWorker | None = None
    feed: EventFeed | None = None
    bootnet: BootNetwork | None = None


def prepare_bootnet(config: Config) -> bootnet_prepare.Prepared | None:
    """The boot network's checks and files (pxed/bootnet/prepare.py), if
    pxed serves it; raises StartupError."""
    if config.boot_dhcp != "proxy":
        return None
    try:
        return bootnet_prepare.prepare(config)
    except bootnet_prepare.BootNetError as e:
        raise StartupError(str(e)) from None


def build(config: Config, reactor, engine: sa.Engine | None = None) -> Pxed:
    # Before the database: a boot network that cannot be served stops the
    # start before anything is opened.
    bootnet_ready = prepare_bootnet(config)
    engine = engine if engine is not None else prepare(config)
    top = OrderedServices()
    top.setName("pxed")
    # One registry per server (/metrics), handed to everything that counts.
    metrics = Metrics(stats.QUEUE_STATES, stats.BUILD_STATES)
    db = DBPool(engine, reactor, config.db_busy_timeout, metrics)
    db.setServiceParent(top)
    io = IOPool(reactor)
    io.setServiceParent(top)
    storage = Storage(config.data_dir, config.server)
    chunker = None
    if config.chunk_store:
        chunker = Chunker(
            db,
            io,
            ChunkStore(config.data_dir, config.chunk_size, config.server),
            storage,
            reactor,
            metrics,
            config.keep_whole_files,
            config.chunk_gc_interval,
        )
        chunker.setServiceParent(top)
    engine = DockerEngine(
        config.docker_host, reactor, config.build_concurrency, config.build_timeout
    )
    engine.setServiceParent(top)
    store = ImageStore(db, io, storage, chunker)
    builder = BuildWorker(config, db, engine, io, store, reactor, metrics)
    builder.setServiceParent(top)
    # Stopped before the pools and the store they commit through.
    importer = imports_service.make(config, db, store, reactor)
    importer.pool.setServiceParent(top)
    importer.setServiceParent(top)
    # After the pool (they read and write through it), before the web port.
    credentials = Credentials(
        db,
        machine_key(config.data_dir),
        dt.timedelta(hours=config.machine_token_hours),
        config.max_enlisting,
    )
    view = BootView(db, credentials.key, reactor, config.boot_view_refresh, metrics)
    view.setServiceParent(top)
    # The live event streams' one reader.
    feed = EventFeed(
        db, reactor, config.max_event_streams, config.event_stream_keepalive, metrics=metrics
    )
    feed.setServiceParent(top)
    listener = ChangeListener(db, reactor)
    listener.watch(BOOT_DEPENDS, view.changed)
    listener.watch(FEED_TABLES, feed.changed)
    listener.setServiceParent(top)
    answers = AnswerLog(db, reactor, config.boot_answer_log_interval)
    answers.setServiceParent(top)
    if not config.log_boot_answers:
        log.info(
            "boot answers are not in the access log (log_boot_answers = false):"
            " see each machine's events and /metrics"
        )
    # Every power action goes through it (machines' BMCs: Redfish, IPMI);
    # stopped before the pools, after the port.
    power = PowerService(
        db, power_key(config.data_dir), reactor, config.power_timeout, config.power_retries
    )
    power.setServiceParent(top)
    # Ends leases and powers or re-images their machines: after the power
    # service and the pool it goes through, before the web port.
    keeper = LeaseKeeper(
        db,
        credentials,
        power,
        reactor,
        config.lease_check_interval,
        dt.timedelta(minutes=config.lease_warning_minutes),
    )
    keeper.setServiceParent(top)
    mgmtos = ManagementOS(config, reactor)
    mgmtos.setServiceParent(top)
    boot = BootAnswers(
        config, view, credentials, answers, metrics, Origin(config.base_url).base_url, mgmtos
    )
    bootnet = None
    web_listening: Deferred[IListeningPort] = Deferred()
    if bootnet_ready is not None:
        bootnet = BootNetwork(config, bootnet_ready, db, reactor, web_listening)
        listener.watch(BOOTNET_DEPENDS, bootnet.changed)
    app = PxedApp(
        config,
        db,
        io,
        store,
        builder,
        boot,
        reactor,
        metrics,
        power,
        feed,
        importer,
        mgmtos=mgmtos,
        bootnet=bootnet,
    )
    site = PxedSite(
        app.resource(),
        config.cors_origins,
        storage,
        reactor,
        io,
        authenticator=app.authenticator,
        header_timeout=config.header_timeout,
        max_connections_per_client=config.max_connections_per_client,
        metrics=metrics,
        route_of=app.route_of,
    )
    web = web_service(config.port, site, reactor)
    web.setServiceParent(top)
    if bootnet is not None:
        web.endpoint.listening.addCallback(_pass_on, web_listening)
        bootnet.setServiceParent(top)
    return Pxed(top, db, app, web, store=store, builder=builder, feed=feed, bootnet=bootnet)


def _pass_on(port: IListeningPort, to: Deferred[IListeningPort]) -> IListeningPort:
    to.callback(port)
    return port


def makeService(config: Config, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    # What exists once pxed is up (modules, the app, the route tables) lives
    # as long as the process: out of the collector's sight, a full
    # collection no longer walks it, which had answers wait tens of ms.
    reactor.callWhenRunning(gc.freeze)
    return build(config, reactor).service
