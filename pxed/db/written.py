"""What a write changed, named the way ``DBPool.watch``'s watchers name
what they depend on.

A statement that changed rows is named by its table (``machines``), its
kind (``machines:insert``, ``machines:update``, ``machines:delete``) and,
for an UPDATE, each column it sets (``machines.last_seen``).  A watcher
that depends on some columns of a table names those: a write that sets
only others (a log line's ``last_seen``) passes it by, here and, through
the NOTIFY payload, on every other server.

SQLAlchemy has no public way to ask an UPDATE which columns it sets.  The
statement keeps those of ``.values()`` and ``.ordered_values()`` in its
private ``_values`` (a mapping of column or name to value, None without
them); those given at execution are the parameters' keys.  Where
``_values`` is missing or no mapping (SQLAlchemy changed), every column of
the table is named: watchers then hear of more writes than they need,
never of fewer.  tests/db/test_written.py checks each way pxed writes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa

T = TypeVar("T")

# The private attribute of sa.Update read (SQLAlchemy 2.0 and 2.1 have it).
PRIVATE = "_values"
_MISSING = object()

_KINDS: tuple[tuple[type, str], ...] = (
    (sa.Insert, "insert"),
    (sa.Update, "update"),
    (sa.Delete, "delete"),
)


# Where a transaction keeps the machines its writes concern (conn.info).
MACHINES = "pxed.machines"


class Written(frozenset[str]):
    """What a committed transaction wrote, as watchers name it; and, when
    its caller said so (``concerning``), the only machines it concerns
    (None: any machine may be concerned)."""

    machines: frozenset[int] | None

    def __new__(cls, names: Iterable[str], machines: Iterable[int] | None = None) -> Written:
        self = super().__new__(cls, names)
        self.machines = None if machines is None else frozenset(machines)
        return self


def concerning(machine_id: int, thd: Callable[..., T]) -> Callable[..., T]:
    """*thd*, run in a transaction whose writes concern machine
    *machine_id* and no other (queueing or cancelling its work): the boot
    view then keeps answering the other machines while it reloads."""

    def run(conn: sa.Connection, *args: Any, **kwargs: Any) -> T:
        conn.info.setdefault(MACHINES, set()).add(machine_id)
        return thd(conn, *args, **kwargs)

    return run


def names(statement: Any, params: Iterable[Mapping[str, Any]]) -> set[str]:
    """What *statement* (a DML statement, run with *params*) writes, as
    watchers name it; empty for anything else."""
    kind = next((k for cls, k in _KINDS if isinstance(statement, cls)), None)
    table = getattr(statement, "table", None)
    name = getattr(table, "name", None)
    if kind is None or name is None:
        return set()
    found = {name, f"{name}:{kind}"}
    if kind == "update":
        found.update(f"{name}.{column}" for column in set_columns(statement, params))
    return found


def set_columns(update: sa.Update, params: Iterable[Mapping[str, Any]]) -> set[str]:
    """The names of the columns *update* sets (every column of its table
    when that cannot be told)."""
    columns = set(update.table.c.keys())
    values = getattr(update, PRIVATE, _MISSING)
    if values is not None and not isinstance(values, Mapping):
        return columns
    found = {_key(k) for k in values or ()}
    # Parameters given at execution set the columns they name; the others
    # (a bindparam of the WHERE clause) are not columns, or if they share a
    # column's name, naming it too errs on the side of telling.
    for row in params:
        found.update(k for k in row if k in columns)
    return found


def _key(column: Any) -> str:
    return column if isinstance(column, str) else column.key
