"""GET /metrics: pxed's counters in Prometheus' text format, for admins and
for clients in ``metrics_networks``.  The collectors are in pxed.metrics;
what only the database knows (queue entries and builds by state) is read
here, by one query on the read threads, before the registry is written
out: nothing blocks the reactor while Prometheus scrapes."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from pxed.db import stats
from pxed.db.pool import DBPool
from pxed.metrics import Metrics
from pxed.web.router import route


class MetricsResource:
    def __init__(self, db: DBPool, metrics: Metrics) -> None:
        self._db = db
        self._metrics = metrics

    @route("/metrics", ["GET"], access="metrics")
    async def metrics(self, request: IRequest) -> str:
        """pxed's counters in Prometheus' text format.

        Requests and their latencies by route, boot answers by decision,
        bytes and throughput of uploads and downloads, queue entries and
        builds by state, build durations, database wait and query times,
        bytes in staging (README.rst, "Metrics")."""
        states = await self._db.read(stats.thd_states)
        self._metrics.set_states(states.queue, states.builds)
        return self._metrics.render()
