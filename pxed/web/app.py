"""The Klein application: resource modules composed over shared state."""

from __future__ import annotations

import datetime as dt

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from pxed import macaddr
from pxed.config import Config
from pxed.db import credentials, machines
from pxed.db.machines import Machine
from pxed.db.pool import DBPool
from pxed.errors import NotFound
from pxed.web import router
from pxed.web.auth import AuthMixin
from pxed.web.boot import BootRoutes
from pxed.web.github import GitHubRoutes
from pxed.web.health import HealthRoutes
from pxed.web.machines import MachinesRoutes
from pxed.web.router import route
from pxed.web.static import StaticFiles
from pxed.web.users import UsersRoutes


class PxedApp(AuthMixin, HealthRoutes, UsersRoutes, GitHubRoutes, MachinesRoutes, BootRoutes):
    app = router.app

    def __init__(self, config: Config, db: DBPool) -> None:
        self.config = config
        self.db = db
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

    async def has_work(self, machine: Machine) -> bool:
        """Whether the machine has queued or in-progress boot work."""
        return False

    async def boot_token(self, machine: Machine) -> str | None:
        """A fresh credential for the management OS, minted into the cmdline
        on every answer (pixiecore may use any of them); all are revoked
        when the machine's setup ends."""
        lifetime = dt.timedelta(hours=self.config.machine_token_hours)
        return await self.db.run(
            credentials.thd_mint, machine.id, await self.work_images(machine), lifetime
        )

    async def work_images(self, machine: Machine) -> frozenset[str]:
        """The images the machine's current work may read or write."""
        return frozenset({machine.image_uuid})

    @route("/static/", ["GET", "HEAD"], access="public", branch=True)
    async def static_files(self, request: IRequest) -> IResource:
        return self.static
