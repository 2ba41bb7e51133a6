"""Liveness: /healthz answers once the database answers."""

from __future__ import annotations

import sqlalchemy as sa
from twisted.web.iweb import IRequest

from pxed.errors import ServiceUnavailable
from pxed.web.router import route


def thd_ping(conn: sa.Connection) -> None:
    conn.execute(sa.text("SELECT 1"))


class HealthRoutes:
    @route("/healthz", ["GET", "HEAD"], access="public")
    async def healthz(self, request: IRequest) -> dict:
        try:
            await self.db.run(thd_ping)
        except Exception as e:
            raise ServiceUnavailable(f"database: {type(e).__name__}") from None
        return {"status": "ok"}
