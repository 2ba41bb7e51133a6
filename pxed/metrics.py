"""What pxed counts for Prometheus (``GET /metrics``): every collector, in
one registry per server.

One ``Metrics`` is made when the service tree is built and handed to what
records into it (the site, the router's routes, the database pool, the
build worker, uploads); nothing here is a module-level global, so several
servers in one process (the tests) each count their own.

Labels stay bounded: HTTP requests are labelled by the route's template
(``/image/<uuid>``), never the raw path, and by a known method; queue and
build states are the fixed lists of pxed.db.queue and pxed.db.builds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# No ``*_created`` series beside every counter and histogram: in the text
# format they double the series a scrape carries and say only when the
# server started.  (A switch of the library's, for the whole process.)
disable_created_metrics()

# The route label of a request no route matched (404, 405, a CORS preflight).
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})

# What a netboot answer said: the management OS, "boot from your disk" to
# a known machine, or the same to a MAC pxed does not know.
BOOT_DECISIONS = ("management-os", "local-disk", "unknown")

CHUNK_KINDS = ("stored", "deduplicated", "compressed", "served", "collected")

# Seconds: boot answers and API calls are milliseconds, uploads and
# downloads of images minutes.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Bytes per second of one transfer: 100 kB/s to 10 GB/s.
THROUGHPUT_BUCKETS = (1e5, 1e6, 1e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 2.5e9, 5e9, 1e10)
# Seconds a build runs: a failed Dockerfile ends in seconds, a big image in
# an hour (build_timeout's default).
BUILD_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
# Seconds a query waits for its thread, and runs on it.
DB_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """The collectors of one server, in ``self.registry``."""

    def __init__(
        self,
        queue_states: tuple[str, ...] = (),
        build_states: tuple[str, ...] = (),
    ) -> None:
        self.registry = r = CollectorRegistry()
        self.http_requests = Counter(
            "pxed_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "pxed_http_request_duration_seconds",
            "Time from a request's headers to the end of its answer (an upload's "
            "body included), by method and route template.",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.boot_answers = Counter(
            "pxed_boot_answers",
            "Netboot answers (/v1/boot/<mac>, /ipxe/<mac>) by decision.",
            ["decision"],
            registry=r,
        )
        self.boot_view_loads = Counter(
            "pxed_boot_view_loads",
            "Loads of the boot view completed (at start, after a write a boot answer "
            "depends on, here or on another server, and every boot_view_refresh seconds;"
            " of the machines a write concerns when it says which).",
            registry=r,
        )
        self.uploaded_bytes = Counter(
            "pxed_upload_bytes", "Bytes of upload bodies received, as they arrive.", registry=r
        )
        self.downloaded_bytes = Counter(
            "pxed_download_bytes",
            "Bytes of files sent (image versions, /static/), counted as each transfer ends.",
            registry=r,
        )
        self.upload_throughput = Histogram(
            "pxed_upload_throughput_bytes_per_second",
            "Bytes per second of each upload body, from its headers to its last byte.",
            buckets=THROUGHPUT_BUCKETS,
            registry=r,
        )
        self.download_throughput = Histogram(
            "pxed_download_throughput_bytes_per_second",
            "Bytes per second of each file download, from its start to its last byte.",
            buckets=THROUGHPUT_BUCKETS,
            registry=r,
        )
        self.chunk_bytes = Counter(
            "pxed_chunk_bytes",
            "Chunk store bytes: stored (new chunks, before compression), "
            "deduplicated (chunks of an indexed version the store had already), "
            "compressed (new chunks as written), served (assembled into downloads), "
            "collected (removed as no version names them, as written).",
            ["kind"],
            registry=r,
        )
        for kind in CHUNK_KINDS:
            self.chunk_bytes.labels(kind)
        self.versions_indexed = Counter(
            "pxed_versions_indexed",
            "Image versions cut into the chunk store.",
            registry=r,
        )
        self.staging_bytes = Gauge(
            "pxed_staging_bytes",
            "Bytes of uploads held in staging files now (received, not yet committed or removed).",
            registry=r,
        )
        self.event_streams = Gauge(
            "pxed_event_streams",
            "Open GET /events/stream answers (max_event_streams bounds them).",
            registry=r,
        )
        self.queue_entries = Gauge(
            "pxed_boot_queue_entries",
            "Boot queue entries by state, read from the database when scraped.",
            ["state"],
            registry=r,
        )
        self.builds = Gauge(
            "pxed_builds",
            "Image builds by state, read from the database when scraped.",
            ["state"],
            registry=r,
        )
        self.build_duration = Histogram(
            "pxed_build_duration_seconds",
            "Time from a build's start to its end, by how it ended.",
            ["state"],
            buckets=BUILD_BUCKETS,
            registry=r,
        )
        self.db_wait = Histogram(
            "pxed_db_wait_seconds",
            "Time a query waited for a database thread, by pool (write, read).",
            ["pool"],
            buckets=DB_BUCKETS,
            registry=r,
        )
        self.db_query = Histogram(
            "pxed_db_query_seconds",
            "Time a query's transaction ran on its thread, by pool (write, read).",
            ["pool"],
            buckets=DB_BUCKETS,
            registry=r,
        )
        self._queue_states = queue_states
        self._build_states = build_states
        # Series that exist from the start (at 0), so a rate or an alert
        # has something to read before the first event.
        self._boot = tuple(self.boot_answers.labels(d) for d in BOOT_DECISIONS)
        for pool in ("write", "read"):
            self.db_wait.labels(pool)
            self.db_query.labels(pool)
        self.set_states({}, {})
        # (method, route, status) -> its counter and histogram: labels()
        # takes a lock and builds a key each call, a few µs per request.
        # Bounded as the labels are.
        self._request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    # -- recording ------------------------------------------------------------

    def request_done(
        self, method: str, route: str | None, status: int, seconds: float | None = None
    ) -> None:
        """One answer; *seconds* None for one given before a request was
        parsed (counted, not timed)."""
        method = method if method in METHODS else "other"
        route = route or UNMATCHED
        key = (method, route, status)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = (
                self.http_requests.labels(method, route, str(status)),
                self.http_duration.labels(method, route),
            )
        series[0].inc()
        if seconds is not None:
            series[1].observe(seconds)

    def boot_answered(self, known: bool, served: bool) -> None:
        """One netboot answer: *served* the management OS, else local disk
        to a *known* machine or to an unknown MAC."""
        self._boot[0 if served else 1 if known else 2].inc()

    def upload_done(self, size: int, seconds: float) -> None:
        if size > 0 and seconds > 0:
            self.upload_throughput.observe(size / seconds)

    def download_done(self, size: int, seconds: float) -> None:
        self.downloaded_bytes.inc(size)
        if size > 0 and seconds > 0:
            self.download_throughput.observe(size / seconds)

    def set_states(self, queue: Mapping[str, int], builds: Mapping[str, int]) -> None:
        """The counts a scrape read from the database (every known state is
        given, 0 where there is none)."""
        for gauge, known, counts in (
            (self.queue_entries, self._queue_states, queue),
            (self.builds, self._build_states, builds),
        ):
            for state in (*known, *(s for s in counts if s not in known)):
                gauge.labels(state).set(counts.get(state, 0))

    def render(self) -> str:
        """The registry in Prometheus' classic text format (served as
        text/plain, which Prometheus reads as that format)."""
        return generate_latest(self.registry).decode("utf-8")
