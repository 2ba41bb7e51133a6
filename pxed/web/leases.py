"""Leases: ``POST /leases`` reserves machines for a time window, ``GET
/leases`` is the calendar, ``GET``/``PUT``/``DELETE /lease/{id}`` shows,
extends or shortens, and releases one.  While a lease runs only its holder
and staff may queue work on its machine, power it or read its logs
(``pxed.web.leasehold.check_lease``, used by those routes)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from twisted.web.iweb import IRequest

from pxed import macaddr
from pxed.config import Config
from pxed.db import hardware, leases, machines, users
from pxed.db.pool import DBPool
from pxed.db.schema import utcnow
from pxed.db.users import User
from pxed.errors import BadRequest, Forbidden
from pxed.web import render
from pxed.web.auth import actor, user
from pxed.web.body import Fields, parse_time, query_arg, read_json
from pxed.web.machines import hardware_filters
from pxed.web.router import route

# The most machines one request reserves, and leases one listing returns.
MAX_MACHINES = 256
MAX_LISTED = 1000


def limits_for(config: Config, role: str) -> leases.Limits:
    """The role's limits from the settings (0 there: none); admins have none."""
    if role == "admin":
        return leases.Limits(None, None, None)
    prefix = "lease_moderator" if role == "moderator" else "lease_user"
    machines, hours, ahead = (
        getattr(config, f"{prefix}_{name}") for name in ("machines", "hours", "ahead_days")
    )
    return leases.Limits(machines or None, hours or None, ahead or None)


class LeasesResource:
    def __init__(self, db: DBPool, config: Config) -> None:
        self._db = db
        self._config = config

    def _limits(self, who: User) -> leases.Limits:
        return limits_for(self._config, who.role)

    @route("/leases", ["POST"], access="signed-in")
    async def reserve(self, request: IRequest) -> list:
        """Reserve ``Machines`` (names or MACs) from ``Start`` (default now)
        until ``End`` (or for ``Hours``); staff may reserve for ``User``."""
        body = read_json(request)
        wanted = _wanted(body)
        start_text = body.str("Start", max_length=64)
        starts = parse_time(start_text, "Start") if start_text else utcnow()
        ends = _end(body, starts)
        caller = user(request)
        holder = caller
        on_behalf = body.str("User", max_length=255)
        if on_behalf is not None and on_behalf != caller.username:
            if not caller.is_staff:
                raise Forbidden("User: only moderators and admins reserve for someone else")
            holder = await self._db.read(users.thd_get_or_404, on_behalf)
        made = await self._db.run(
            _thd_reserve, wanted, holder.id, starts, ends, self._limits(holder), actor(request)
        )
        request.setResponseCode(201)
        return [render.lease(lease) for lease in made]

    @route("/leases", ["GET"], access="signed-in")
    async def calendar(self, request: IRequest) -> list:
        """Leases overlapping ``?since=`` (default now) to ``?until=``, of
        ``?machine=`` (a name or MAC) and ``?user=``; ended ones too."""
        since_text, until_text = query_arg(request, "since"), query_arg(request, "until")
        since = parse_time(since_text, "since") if since_text else utcnow()
        until = parse_time(until_text, "until") if until_text else None
        machine, holder = query_arg(request, "machine"), query_arg(request, "user")
        found = await self._db.read(_thd_calendar, machine, holder, since, until)
        return [render.lease(lease) for lease in found]

    @route("/lease/<int:lease_id>", ["GET"], access="signed-in")
    async def show(self, request: IRequest, lease_id: int) -> dict:
        return render.lease(await self._db.read(leases.thd_get, lease_id))

    @route("/lease/<int:lease_id>", ["PUT"], access="owner")
    async def extend(self, request: IRequest, lease_id: int) -> dict:
        """A new ``End`` (or ``Hours`` from its start): longer if nothing
        follows on the machine, or shorter."""
        body = read_json(request)
        lease = await self._db.read(leases.thd_get, lease_id)
        holder = await self._holder_or_staff(request, lease)
        ends = _end(body, lease.starts_at)
        changed = await self._db.run(
            leases.thd_extend, lease_id, ends, self._limits(holder), actor(request)
        )
        return render.lease(changed)

    @route("/lease/<int:lease_id>", ["DELETE"], access="owner")
    async def release(self, request: IRequest, lease_id: int) -> dict:
        """End the lease now (one not begun is cancelled)."""
        lease = await self._db.read(leases.thd_get, lease_id)
        await self._holder_or_staff(request, lease)
        return render.lease(await self._db.run(leases.thd_release, lease_id, actor(request)))

    async def _holder_or_staff(self, request: IRequest, lease: leases.Lease) -> User:
        """The lease's holder (whose limits apply), if the caller is he or staff."""
        caller = user(request)
        if caller.username == lease.holder:
            return caller
        if not caller.is_staff:
            raise Forbidden("only the lease's holder, moderators and admins")
        return await self._db.read(users.thd_get_or_404, lease.holder)


def _end(body, starts: dt.datetime) -> dt.datetime:
    end_text = body.str("End", max_length=64)
    hours = body.raw("Hours")
    if (end_text is None) == (hours is None):
        raise BadRequest("End or Hours: give one (an ISO 8601 time, or hours from Start)")
    if end_text is not None:
        return parse_time(end_text, "End")
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours < 1e6:
        raise BadRequest("Hours: a positive number")
    return starts + dt.timedelta(hours=hours)


@dataclass(frozen=True)
class _Wanted:
    """``Machines`` by name or MAC, or ``Count`` machines that ``Filter``
    admits (GET /machines's filters: arch, min_memory, min_cpus,
    disk_min_size)."""

    names: tuple[str, ...] = ()
    filters: hardware.Filters | None = None
    count: int = 1


def _wanted(body: Fields) -> _Wanted:
    names = body.list("Machines")
    given = body.object("Filter")
    if (names is None) == (given is None):
        raise BadRequest("Machines or Filter: give one (names or MACs, or hardware to match)")
    if given is None:
        assert names is not None
        if not names or len(names) > MAX_MACHINES:
            raise BadRequest(f"Machines: between 1 and {MAX_MACHINES} names or MACs")
        if not all(isinstance(n, str) and 0 < len(n) <= 255 for n in names):
            raise BadRequest("Machines: each a machine's name or MAC")
        return _Wanted(names=tuple(names))
    raw = body.raw("Filter")
    args = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise BadRequest(f"Filter.{str(key)[:40]}: a string or a number")
        args[str(key).lower()] = str(value)
    count = body.int("Count")
    count = 1 if count is None else count
    if not 1 <= count <= MAX_MACHINES:
        raise BadRequest(f"Count: between 1 and {MAX_MACHINES}")
    return _Wanted(filters=hardware_filters(args), count=count)


def _as_mac(text: str) -> str | None:
    try:
        return macaddr.normalise(text)
    except BadRequest:
        return None


def _thd_reserve(conn, wanted: _Wanted, holder_id, starts, ends, limits, actor_name):
    if wanted.filters is None:
        ids = [leases.thd_machine_id(conn, name, _as_mac(name)) for name in wanted.names]
        return leases.thd_reserve(conn, ids, holder_id, starts, ends, limits, actor_name)
    # By name, so that a filter's choice is the same whoever asks.
    admitted = hardware.thd_matching(conn, wanted.filters)
    ordered = [m.id for m in sorted(machines.thd_list(conn), key=lambda m: m.name)]
    candidates = [i for i in ordered if i in admitted]
    return leases.thd_reserve_any(
        conn, candidates, wanted.count, holder_id, starts, ends, limits, actor_name
    )


def _thd_calendar(conn, machine, holder, since, until):
    machine_id = leases.thd_machine_id(conn, machine, _as_mac(machine)) if machine else None
    holder_id = users.thd_id(conn, holder) if holder else None
    return leases.thd_list(conn, machine_id, holder_id, since, until, MAX_LISTED)
