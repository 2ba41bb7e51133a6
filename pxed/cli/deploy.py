"""deploy MAC SETUP [--power cycle] [--wait]: queue a setup on a machine
and, with --wait, follow the work on the event stream until it ends."""

from __future__ import annotations

import sys
import time

import click

from pxed.cli.client import CONNECTION, SERVER_ERROR, CliError, EventStream, api
from pxed.cli.output import emit_json

# The events that end a work item (pxed/db/queue.py writes them).
DONE, FAILED, CANCELLED = "queue.done", "queue.failed", "queue.cancelled"


@click.command()
@click.argument("mac")
@click.argument("setup")
@click.option(
    "--power",
    type=click.Choice(["cycle", "on", "none"]),
    help="Power action on queueing (default: the machine's OnQueue).",
)
@click.option(
    "--after",
    type=click.Choice(["reboot", "poweroff", "none"]),
    help="What pxed does once the work is done (default: the machine's After).",
)
@click.option(
    "--erase",
    type=click.Choice(["metadata", "discard", "full"]),
    help="Erase every disk first, whoever used the machine last.",
)
@click.option(
    "--user-data",
    type=click.File("r"),
    help="cloud-init user-data for the machine's seed (a file, - for stdin).",
)
@click.option(
    "--seed/--no-seed",
    default=None,
    help="Write a cloud-init seed or not (default: as the images say).",
)
@click.option("--wait", is_flag=True, help="Follow the work to its end; exit 1 if it fails.")
@click.option(
    "--timeout", type=float, default=3600.0, show_default=True, help="Seconds --wait waits at most."
)
@click.option("--json", "as_json", is_flag=True, help="Print the work as JSON.")
def deploy(mac, setup, power, after, erase, user_data, seed, wait, timeout, as_json) -> None:
    """Queue the image setup SETUP (its UUID) on machine MAC."""
    server = api()
    given = {
        "SetupUUID": setup,
        "Power": power,
        "After": after,
        "Erase": erase,
        "UserData": user_data.read() if user_data is not None else None,
        "Seed": seed,
    }
    body = {k: v for k, v in given.items() if v is not None}
    if not wait:
        work = server.post(f"/machine/{mac}/boot", body)
        if as_json:
            emit_json(work)
        else:
            click.echo(f"Queued work {work['ID']} ({work['Name']}) on {mac}")
        return
    # The stream is open before the work is queued: nothing it does is missed.
    with server.events(machine=mac) as stream:
        work = server.post(f"/machine/{mac}/boot", body)
        if not as_json:
            click.echo(f"Queued work {work['ID']} ({work['Name']}) on {mac}")
        outcome = follow(stream, work["ID"], timeout)
    work = {**work, "State": "completed" if outcome["Action"] == DONE else "failed"}
    if as_json:
        emit_json(work)
    if outcome["Action"] != DONE:
        ended = outcome["Action"].removeprefix("queue.")
        reason = f": {outcome['Detail']}" if outcome["Detail"] else ""
        raise CliError(f"work {work['ID']} {ended}{reason}", SERVER_ERROR)
    if not as_json:
        click.echo(f"Work {work['ID']} done")


def follow(stream: EventStream, work_id: int, timeout: float) -> dict:
    """The work's progress from the machine's event stream, shown on stderr
    (a terminal gets a bar per image, each left on its line once the next
    starts; elsewhere a line per step), until its closing event, which is
    returned."""
    deadline = time.monotonic() + timeout
    tty = sys.stderr.isatty()
    last: tuple | None = None
    image = None  # the image whose bar is on the current line
    tag = f"work={work_id}"
    step = "queued"
    for kind, data in stream:
        if kind == "event" and data["Action"] in (DONE, FAILED, CANCELLED):
            detail = data["Detail"] or ""
            if tag in detail.split():
                if tty and last is not None:
                    click.echo(err=True)
                return {**data, "Detail": detail.removeprefix(tag).strip()}
        progress = data["Progress"] if kind == "progress" else None
        if progress is not None and progress["WorkID"] == work_id:
            step, percent = progress["Step"], progress["Percent"]
            shown = (step, percent, progress["Image"], progress["ImageWritten"])
            if shown != last and tty:
                if progress["Image"] and progress["Image"] != image:
                    if image is not None:
                        click.echo(err=True)
                    image = progress["Image"]
                click.echo("\r" + _bar_line(progress) + "\x1b[K", nl=False, err=True)
            elif shown != last and (last is None or step != last[0]):
                click.echo(f"{step} {percent}%", err=True)
            last = shown
        if time.monotonic() > deadline:
            raise CliError(f"work {work_id} still {step} after {timeout:g} s")
    raise CliError(f"the event stream ended before work {work_id} did", CONNECTION)


def _bar_line(progress: dict) -> str:
    """``image 1a2b3c4d [####------] 40% | writing image 1 of 2, 20% of all``,
    or the step alone before any image."""
    if not progress["Image"]:
        return f"{progress['Step']} {progress['Percent']}%"
    total = progress["ImageTotal"]
    percent = min(100, progress["ImageWritten"] * 100 // total) if total else 100
    bar = "#" * (30 * percent // 100)
    return (
        f"image {progress['Image'][:8]} [{bar:-<30}] {percent:3d}% | "
        f"{progress['Step']}, {progress['Percent']}% of all"
    )
