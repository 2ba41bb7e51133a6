"""The web application: every resource, built from what it uses and served
by one Klein app.

To add a route: a handler with ``@route(…, access=…)`` on the resource
class it belongs to; to add a resource: a class listed in RESOURCES and
built in ``PxedApp.__init__``."""

from __future__ import annotations

from klein import Klein
from treq.client import HTTPClient
from twisted.web.client import Agent
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from pxed.boot import networks
from pxed.boot.answers import BootAnswers
from pxed.bootnet.service import BootNetwork
from pxed.builder.worker import BuildWorker
from pxed.config import Config
from pxed.db.pool import DBPool
from pxed.eventfeed import EventFeed
from pxed.github import GitHubClient
from pxed.imagestore import ImageStore
from pxed.imports.service import Importer
from pxed.metrics import Metrics
from pxed.mgmtosbuild import ManagementOS
from pxed.power.service import PowerService
from pxed.web import router
from pxed.web.agent import AgentResource
from pxed.web.auth import Authenticator, Sessions
from pxed.web.boot import BootResource
from pxed.web.bootfiles import BootFilesResource
from pxed.web.builds import BuildsResource
from pxed.web.chunked import Downloads
from pxed.web.dashboard import DashboardResource
from pxed.web.github import GitHubResource
from pxed.web.hardware import HardwareResource
from pxed.web.health import HealthResource
from pxed.web.imageaccess import ImageAccess
from pxed.web.images import ImagesResource, max_image_size
from pxed.web.imports import ImportsResource
from pxed.web.leases import LeasesResource
from pxed.web.machines import MachinesResource
from pxed.web.metrics import MetricsResource
from pxed.web.openapi import OpenAPIResource
from pxed.web.origin import Origin
from pxed.web.power import PowerResource
from pxed.web.queue import QueueResource
from pxed.web.router import route
from pxed.web.setups import SetupsResource
from pxed.web.sshkeys import SSHKeysResource
from pxed.web.static import StaticFiles
from pxed.web.stream import StreamResource
from pxed.web.users import UsersResource
from pxed.workers import IOPool


class StaticResource:
    """Files an operator puts in the static dir (kernels, initramfs)."""

    def __init__(self, path: str) -> None:
        self._files = StaticFiles(path)

    @route("/static/", ["GET", "HEAD"], access="public", branch=True)
    async def static_files(self, request: IRequest) -> IResource:
        return self._files


RESOURCES: tuple[type, ...] = (
    HealthResource,
    UsersResource,
    SSHKeysResource,
    GitHubResource,
    MachinesResource,
    HardwareResource,
    BootResource,
    BootFilesResource,
    ImagesResource,
    ImportsResource,
    SetupsResource,
    QueueResource,
    AgentResource,
    PowerResource,
    LeasesResource,
    BuildsResource,
    StaticResource,
    OpenAPIResource,
    MetricsResource,
    StreamResource,
    DashboardResource,
)

# endpoint -> route and access rule, for every route served
ROUTES = router.route_table(RESOURCES)


class PxedApp:
    def __init__(
        self,
        config: Config,
        db: DBPool,
        io: IOPool,
        store: ImageStore,
        builder: BuildWorker,
        boot: BootAnswers,
        reactor,
        metrics: Metrics,
        power: PowerService,
        feed: EventFeed,
        importer: Importer,
        github: GitHubClient | None = None,
        mgmtos: ManagementOS | None = None,
        bootnet: BootNetwork | None = None,
    ) -> None:
        self.metrics = metrics
        origin = Origin(config.base_url)
        sessions = Sessions(db, origin, config.session_hours)
        access = ImageAccess(db)
        if github is None and config.github.enabled:
            github = GitHubClient(config.github, reactor, HTTPClient(Agent(reactor)))
        # Also used by the site, to authenticate uploads before their body.
        self.authenticator = authenticator = Authenticator(
            db, boot.credentials, networks.networks(config.metrics_networks)
        )
        self.resources = (
            HealthResource(db, mgmtos, bootnet),
            UsersResource(db, sessions, store, config.on_user_delete),
            SSHKeysResource(db),
            GitHubResource(db, config.github, github, origin, sessions),
            MachinesResource(db, store, power),
            HardwareResource(db, store, boot.credentials),
            BootResource(boot),
            BootFilesResource(config.boot_dhcp_ipxe_dir, config.boot_networks),
            ImagesResource(
                db,
                store,
                access,
                max_image_size(config.max_image_size, config.data_dir),
                importer,
                Downloads(
                    store.storage.path,
                    store.chunker.chunks if store.chunker is not None else None,
                    io,
                    metrics,
                    config.keep_whole_files,
                ),
            ),
            ImportsResource(db, importer, access),
            SetupsResource(db),
            QueueResource(db, power, boot.credentials),
            AgentResource(db, origin, power, boot.credentials, io, store.storage.staging),
            PowerResource(db, power),
            LeasesResource(db, config),
            BuildsResource(db, io, builder, access, origin, reactor),
            StaticResource(str(config.static_path)),
            OpenAPIResource(RESOURCES),
            MetricsResource(db, metrics),
            StreamResource(db, feed, access, authenticator, config.event_stream_backlog),
            DashboardResource(),
        )
        assert tuple(type(r) for r in self.resources) == RESOURCES
        self.app = Klein()
        for resource in self.resources:
            router.mount(self.app, resource, authenticator.authorise)
        router.handle_errors(self.app, config.base_url)

    def resource(self) -> IResource:
        # The boot answers the boot view can give at once are given before
        # any routing (a rack powering on asks thousands a second).
        boot = self.resources[RESOURCES.index(BootResource)]
        return boot.front(router.TextPaths(self.app.resource()))

    def route_of(self, method: bytes, path: bytes) -> str | None:
        """The template of the route that serves *method* *path*."""
        return router.route_of(self.app, ROUTES, method, path)
