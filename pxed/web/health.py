"""Liveness: /healthz answers at once whether the database answers, and
whether it is busy (another connection holds the write lock)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from pxed.db.pool import DBPool
from pxed.errors import DatabaseBusy, ServiceUnavailable
from pxed.web.router import route

# Seconds /healthz waits for the database before saying it is busy.
HEALTH_TIMEOUT = 1.0


class HealthResource:
    def __init__(self, db: DBPool) -> None:
        self._db = db

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
        return {"status": "ok"}
