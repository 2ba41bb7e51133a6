"""Liveness: /healthz answers once the database answers."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from pxed.db.pool import DBPool, thd_ping
from pxed.errors import ServiceUnavailable
from pxed.web.router import route


class HealthResource:
    def __init__(self, db: DBPool) -> None:
        self._db = db

    @route("/healthz", ["GET", "HEAD"], access="public")
    async def healthz(self, request: IRequest) -> dict:
        try:
            await self._db.run(thd_ping)
        except Exception as e:
            raise ServiceUnavailable(f"database: {type(e).__name__}") from None
        return {"status": "ok"}
