"""deploy MAC SETUP [--power cycle] [--wait]: queue a setup on a machine
and, with --wait, follow the work through GET /machine/{mac} until it ends."""

from __future__ import annotations

import sys
import time

import click

from pxed.cli.client import SERVER_ERROR, Api, CliError, api
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
@click.option("--wait", is_flag=True, help="Follow the work to its end; exit 1 if it fails.")
@click.option(
    "--timeout", type=float, default=3600.0, show_default=True, help="Seconds --wait waits at most."
)
@click.option("--interval", type=float, default=1.0, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print the work as JSON.")
def deploy(mac, setup, power, after, wait, timeout, interval, as_json) -> None:
    """Queue the image setup SETUP (its UUID) on machine MAC."""
    server = api()
    body: dict = {"SetupUUID": setup}
    if power is not None:
        body["Power"] = power
    if after is not None:
        body["After"] = after
    work = server.post(f"/machine/{mac}/boot", body)
    if not as_json:
        click.echo(f"Queued work {work['ID']} ({work['Name']}) on {mac}")
    if wait:
        outcome = follow(server, mac, work["ID"], timeout, interval)
        work = {**work, "State": "completed" if outcome["Action"] == DONE else "failed"}
        if as_json:
            emit_json(work)
        if outcome["Action"] != DONE:
            ended = outcome["Action"].removeprefix("queue.")
            reason = f": {outcome['Detail']}" if outcome["Detail"] else ""
            raise CliError(f"work {work['ID']} {ended}{reason}", SERVER_ERROR)
        if not as_json:
            click.echo(f"Work {work['ID']} done")
    elif as_json:
        emit_json(work)


def follow(server: Api, mac: str, work_id: int, timeout: float, interval: float) -> dict:
    """Polls the machine's Progress until the work is no longer current,
    showing it on stderr (a terminal gets a bar per image, each left on its
    line once the next starts; elsewhere a line per step); its closing event."""
    deadline = time.monotonic() + timeout
    tty = sys.stderr.isatty()
    last: tuple | None = None
    image = None  # the image whose bar is on the current line
    while True:
        progress = server.get(f"/machine/{mac}").get("Progress")
        if progress is None or progress["WorkID"] != work_id:
            break
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
        time.sleep(interval)
    if tty and last is not None:
        click.echo(err=True)
    tag = f"work={work_id}"
    for event in reversed(server.get(f"/machine/{mac}/events")):
        detail = event["Detail"] or ""
        if event["Action"] in (DONE, FAILED, CANCELLED) and tag in detail.split():
            return {**event, "Detail": detail.removeprefix(tag).strip()}
    raise CliError(f"work {work_id} is no longer current but ended with no event")


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
