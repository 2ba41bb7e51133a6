"""The Klein application: resource modules composed over shared state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from pxed import macaddr
from pxed.builder.worker import BuildWorker
from pxed.config import Config
from pxed.db import machines
from pxed.db.machines import Machine
from pxed.db.pool import DBPool
from pxed.errors import BadRequest, NotFound
from pxed.storage import FormatError, Storage
from pxed.web import router
from pxed.web.agent import AgentRoutes
from pxed.web.auth import AuthMixin
from pxed.web.boot import BootRoutes
from pxed.web.builds import BuildsRoutes
from pxed.web.github import GitHubRoutes
from pxed.web.health import HealthRoutes
from pxed.web.images import ImagesRoutes
from pxed.web.machines import MachinesRoutes
from pxed.web.queue import QueueRoutes
from pxed.web.router import route
from pxed.web.setups import SetupsRoutes
from pxed.web.static import StaticFiles
from pxed.web.users import UsersRoutes
from pxed.workers import IOPool


class PxedApp(
    AuthMixin,
    HealthRoutes,
    UsersRoutes,
    GitHubRoutes,
    MachinesRoutes,
    BootRoutes,
    ImagesRoutes,
    SetupsRoutes,
    QueueRoutes,
    AgentRoutes,
    BuildsRoutes,
):
    app = router.app

    def __init__(
        self,
        config: Config,
        db: DBPool,
        io: IOPool,
        storage: Storage,
        builder: BuildWorker,
        reactor,
    ) -> None:
        self.config = config
        self.db = db
        self.io = io
        self.storage = storage
        self.builder = builder
        self.reactor = reactor
        self.static = StaticFiles(str(config.static_path))

    def resource(self) -> IResource:
        return self.app.resource()

    # -- the hooks resource modules share ---------------------------------

    def secure(self, request: IRequest) -> bool:
        """Whether cookies get the Secure flag: served over TLS, directly or
        behind a proxy that the base URL says is https."""
        return request.isSecure() or self.config.base_url.startswith("https://")

    def base_url(self, request: IRequest) -> str:
        """The public URL machines reach us at: the configured one, else the
        Host the client used (pixiecore and iPXE use the address they were
        given, which is one the machines can reach)."""
        if self.config.base_url:
            return self.config.base_url.rstrip("/")
        scheme = "https" if request.isSecure() else "http"
        host = request.getHeader("host") or request.getHost().host
        return f"{scheme}://{host}"

    async def machine_or_404(self, mac: str) -> Machine:
        mac = macaddr.normalise(mac)
        machine = await self.db.run(machines.thd_get, mac)
        if machine is None:
            raise NotFound(f"no machine with MAC {mac}")
        return machine

    @asynccontextmanager
    async def blank_disk(
        self, size: int, filesystem: str, compression: str = "none"
    ) -> AsyncIterator[tuple]:
        """A formatted disk in staging, (path, size, sha256), for the block
        to commit; whatever it did not commit is removed afterwards."""
        try:
            blank = await self.io.run(self.storage.make_blank, size, filesystem, compression)
        except FormatError as e:
            raise BadRequest(f"Filesystem: {e}") from None
        try:
            yield blank
        finally:
            await self.io.run(self.storage.discard, blank[0])

    @route("/static/", ["GET", "HEAD"], access="public", branch=True)
    async def static_files(self, request: IRequest) -> IResource:
        return self.static
