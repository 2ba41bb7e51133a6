"""Counts for /metrics: boot queue entries and builds by state, read in one
transaction when Prometheus scrapes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from pxed.db import builds as builds_db
from pxed.db import queue
from pxed.db.schema import boot_setups, builds

QUEUE_STATES = (queue.QUEUED, queue.IN_PROGRESS, queue.DONE, queue.FAILED, queue.CANCELLED)
BUILD_STATES = (
    builds_db.QUEUED,
    builds_db.RUNNING,
    builds_db.SUCCEEDED,
    builds_db.FAILED,
    builds_db.CANCELLED,
)


@dataclass(frozen=True)
class States:
    queue: Mapping[str, int]
    builds: Mapping[str, int]


def _by_state(conn: sa.Connection, table: sa.Table) -> dict[str, int]:
    rows = conn.execute(sa.select(table.c.state, sa.func.count()).group_by(table.c.state))
    return {state: n for state, n in rows}


def thd_states(conn: sa.Connection) -> States:
    return States(queue=_by_state(conn, boot_setups), builds=_by_state(conn, builds))
