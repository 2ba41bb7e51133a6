"""Liveness: /healthz answers at once whether the database answers, and
whether it is busy (another connection holds the write lock); ``mgmtos``
says each architecture's management OS is ``ready``, ``building``,
``missing`` or ``failed`` (its build); with ``boot_dhcp = "proxy"``,
``boot_dhcp`` says pxed's dnsmasq is ``starting``, ``running``,
``restarting`` (it exited; started again after a backoff) or ``failed``
(it keeps exiting), and while it is not running the status is
``degraded``: pxed answers HTTP but machines on the boot network get no
proxyDHCP answer."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from pxed.bootnet.service import RUNNING, STARTING, BootNetwork
from pxed.db.pool import DBPool
from pxed.errors import DatabaseBusy, ServiceUnavailable
from pxed.mgmtosbuild import ManagementOS
from pxed.web.router import route

# Seconds /healthz waits for the database before saying it is busy.
HEALTH_TIMEOUT = 1.0


class HealthResource:
    def __init__(
        self, db: DBPool, mgmtos: ManagementOS | None = None, bootnet: BootNetwork | None = None
    ) -> None:
        self._db = db
        self._mgmtos = mgmtos
        self._bootnet = bootnet

    @route("/healthz", ["GET", "HEAD"], access="public")
    async def healthz(self, request: IRequest) -> dict:
        try:
            status = await self._db.health(HEALTH_TIMEOUT)
        except Exception as e:
            raise ServiceUnavailable(f"database: {type(e).__name__}") from None
        if status == "busy":
            request.setResponseCode(503)
            request.setHeader(b"retry-after", str(DatabaseBusy.retry_after).encode())
            return {"status": "busy", "error": "the database is busy"}
        answer: dict = {"status": "ok"}
        if self._mgmtos is not None:
            answer["mgmtos"] = self._mgmtos.states()
        if self._bootnet is not None:
            state = self._bootnet.state
            answer["boot_dhcp"] = state
            if state not in (RUNNING, STARTING):
                answer["status"] = "degraded"
        return answer
