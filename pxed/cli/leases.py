"""leases: the calendar, reserving machines, extending and releasing."""

from __future__ import annotations

import click

from pxed.cli.client import api
from pxed.cli.output import json_option, show, show_table

COLUMNS = (
    ("ID", "ID"),
    ("MACHINE", "Machine"),
    ("USER", "User"),
    ("START", "Start"),
    ("END", "End"),
    ("STATE", "State"),
)


def _window(end: str | None, hours: float | None) -> dict:
    if (end is None) == (hours is None):
        raise click.UsageError("give --end TIME or --hours N")
    return {"End": end} if end is not None else {"Hours": hours}


@click.group()
def leases() -> None:
    """Leases: list, reserve, extend, release."""


@leases.command("list")
@click.option("--machine", help="One machine's (its name or MAC).")
@click.option("--user", help="One user's.")
@click.option("--since", metavar="TIME", help="Overlapping from TIME (ISO 8601; default now).")
@click.option("--until", metavar="TIME", help="Overlapping until TIME.")
@json_option
def leases_list(machine, user, since, until, as_json: bool) -> None:
    """Leases from now on (or in a window), by start."""
    query = {"machine": machine, "user": user, "since": since, "until": until}
    found = api().get("/leases", params={k: v for k, v in query.items() if v is not None})
    show_table(found, as_json, COLUMNS)


@leases.command("reserve")
@click.argument("machine", nargs=-1)
@click.option("--start", metavar="TIME", help="ISO 8601 (default now).")
@click.option("--end", metavar="TIME", help="ISO 8601.")
@click.option("--hours", type=float, help="Hours from the start.")
@click.option("--user", help="Reserve for this user (moderators and admins).")
@click.option("--count", type=int, help="Without MACHINE: how many machines the filters admit.")
@click.option("--arch", help="Without MACHINE: x86_64 or arm64.")
@click.option("--min-memory", metavar="SIZE", help="Without MACHINE: e.g. 64G.")
@click.option("--min-cpus", type=int, help="Without MACHINE.")
@click.option("--disk-min-size", metavar="SIZE", help="Without MACHINE: a disk at least this big.")
@json_option
def leases_reserve(
    machine, start, end, hours, user, count, arch, min_memory, min_cpus, disk_min_size, as_json
) -> None:
    """Reserve the MACHINE(s) (names or MACs), all or none; or, without
    MACHINE, --count machines (1) that the hardware filters admit."""
    wanted = {
        "arch": arch,
        "min_memory": min_memory,
        "min_cpus": min_cpus,
        "disk_min_size": disk_min_size,
    }
    wanted = {k: v for k, v in wanted.items() if v is not None}
    if machine and (wanted or count is not None):
        raise click.UsageError("give MACHINE names or hardware filters, not both")
    if not machine and not wanted:
        raise click.UsageError("give MACHINE names, or filters (--arch, --min-memory, ...)")
    body: dict = {**_window(end, hours)}
    if machine:
        body["Machines"] = list(machine)
    else:
        body["Filter"] = wanted
        body["Count"] = count if count is not None else 1
    if start is not None:
        body["Start"] = start
    if user is not None:
        body["User"] = user
    show_table(api().post("/leases", body), as_json, COLUMNS)


@leases.command("extend")
@click.argument("lease_id", type=int)
@click.option("--end", metavar="TIME", help="The new end, ISO 8601.")
@click.option("--hours", type=float, help="The new length, hours from its start.")
@json_option
def leases_extend(lease_id: int, end, hours, as_json: bool) -> None:
    """Move a lease's end (later if nothing follows on its machine)."""
    show_table([api().put(f"/lease/{lease_id}", _window(end, hours))], as_json, COLUMNS)


@leases.command("release")
@click.argument("lease_id", type=int)
@json_option
def leases_release(lease_id: int, as_json: bool) -> None:
    """End a lease now (one not begun is cancelled)."""
    ended = api().delete(f"/lease/{lease_id}")
    show(ended, as_json, lambda x: click.echo(f"Released lease {x['ID']} of {x['Machine']}"))
