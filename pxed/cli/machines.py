"""machines, queue, events, logs."""

from __future__ import annotations

import json

import click

from pxed.cli.client import api
from pxed.cli.deploy import deploy
from pxed.cli.output import fields, json_option, show, show_table, table

__all__ = ["deploy", "events", "logs", "machines", "queue"]

MACHINE_FIELDS = (
    "Name", "MacAddresses", "Architecture", "Managed", "State", "ImageUUID",
    "LastSeen", "CreatedAt", "Power", "Progress", "Erase", "LastUser", "LeaseEnd",
)  # fmt: skip
# What a machine's disks get when its next work is another user's
# (pxed/erase.py); an erase on demand takes all but none.
ERASE_POLICIES = ("none", "metadata", "discard", "full")
ERASE_HELP = (
    "Erase between users: none, metadata (partition tables and signatures; "
    "the server's default), discard (and TRIM every block), full (and zero every block)."
)


def _step(m: dict) -> str:
    p = m.get("Progress")
    return f"{p['Step']} {p['Percent']}%" if p else ""


def machine_table(rows: list[dict]) -> None:
    table(
        rows,
        [
            ("MAC", lambda m: m["MacAddress"]["Address"]),
            ("NAME", "Name"),
            ("ARCH", "Architecture"),
            ("MANAGED", lambda m: "yes" if m["Managed"] else "no"),
            ("STATE", "State"),
            ("PROGRESS", _step),
        ],
    )


@click.group()
def machines() -> None:
    """Machines: list, show, add, edit, delete, hardware, power."""


@machines.command("list")
@json_option
def machines_list(as_json: bool) -> None:
    """Every machine, with its state and the progress of its work."""
    show(api().get("/machines"), as_json, machine_table)


@machines.command("show")
@click.argument("mac")
@json_option
def machines_show(mac: str, as_json: bool) -> None:
    """One machine."""
    show(api().get(f"/machine/{mac}"), as_json, lambda m: fields(m, MACHINE_FIELDS))


def _body(
    name: str | None,
    arch: str | None,
    managed: bool | None,
    erase: str | None = None,
    lease_end: str | None = None,
    lease_setup: str | None = None,
) -> dict:
    given = {
        "Name": name,
        "Architecture": arch,
        "Managed": managed,
        "Erase": erase,
        "LeaseEnd": lease_end,
        "LeaseSetupUUID": lease_setup,
    }
    return {k: v for k, v in given.items() if v is not None}


@machines.command("add")
@click.argument("name")
@click.argument("mac", nargs=-1, required=True)
@click.option("--arch", help="x86_64 (the server's default), arm64, ...")
@click.option("--managed/--unmanaged", default=True, show_default=True)
@click.option("--erase", type=click.Choice(ERASE_POLICIES), help=ERASE_HELP)
@json_option
def machines_add(
    name: str, mac: tuple[str, ...], arch: str | None, managed: bool, erase, as_json: bool
):
    """Register machine NAME with its MAC address(es) (admins)."""
    body = {**_body(name, arch, managed, erase), "MacAddresses": [{"Mac": m} for m in mac]}
    created = api().post("/machine", body)
    show(created, as_json, lambda m: click.echo(f"Added {m['Name']} ({mac[0]})"))


@machines.command("edit")
@click.argument("mac")
@click.option("--name")
@click.option("--arch")
@click.option("--managed/--unmanaged", default=None)
@click.option("--erase", type=click.Choice(ERASE_POLICIES), help=ERASE_HELP)
@click.option(
    "--lease-end",
    type=click.Choice(["poweroff", "reimage", "none"]),
    help="When a lease of it ends: power off, re-image with --lease-setup, or nothing.",
)
@click.option("--lease-setup", metavar="SETUP", help="The setup a lease's end re-images with.")
@json_option
def machines_edit(
    mac: str, name, arch, managed, erase, lease_end, lease_setup, as_json: bool
) -> None:
    """Change a machine's name, architecture, managed flag, erase policy or
    what a lease's end does (admins)."""
    body = _body(name, arch, managed, erase, lease_end, lease_setup)
    if not body:
        raise click.UsageError(
            "nothing to change: give --name, --arch, --managed/--unmanaged, --erase,"
            " --lease-end or --lease-setup"
        )
    changed = api().put(f"/machine/{mac}", body)
    show(changed, as_json, lambda m: fields(m, MACHINE_FIELDS))


@machines.command("delete")
@click.argument("mac")
def machines_delete(mac: str) -> None:
    """Remove a machine (admins)."""
    api().delete(f"/machine/{mac}")
    click.echo(f"Deleted {mac}")


@machines.command("hardware")
@click.argument("mac")
@json_option
def machines_hardware(mac: str, as_json: bool) -> None:
    """The machine's last hardware inventory."""

    def render(hw: dict) -> None:
        fields(hw, [k for k in hw if k not in ("Disks", "NICs")])
        for key, columns in (("Disks", ("Name", "Size", "Model")), ("NICs", ("MAC", "Driver"))):
            click.echo(f"{key}:")
            table(hw.get(key) or [], [(c.upper(), lambda d, c=c: d.get(c)) for c in columns])

    show(api().get(f"/machine/{mac}/hardware"), as_json, render)


@machines.command("power")
@click.argument("mac")
@click.argument("action", type=click.Choice(["on", "off", "cycle", "status"]))
@json_option
def machines_power(mac: str, action: str, as_json: bool) -> None:
    """Power the machine on, off, cycle it, or ask its state, through its BMC."""
    server = api()
    if action == "status":
        answer = server.get(f"/machine/{mac}/power")
    else:
        answer = server.post(f"/machine/{mac}/power", {"Action": action})
    show(answer, as_json, lambda a: click.echo(f"{a['Mac']}: {a['State']}"))


@machines.command("erase")
@click.argument("mac")
@click.option(
    "--policy",
    type=click.Choice(ERASE_POLICIES[1:]),
    help="How much (default: the machine's policy, or metadata where that is none).",
)
@click.option(
    "--after",
    type=click.Choice(["reboot", "poweroff", "none"]),
    help="Once erased (default: poweroff where pxed has the machine's power).",
)
@json_option
def machines_erase(mac: str, policy: str | None, after: str | None, as_json: bool) -> None:
    """Queue work that erases every disk of machine MAC and writes nothing (admins)."""
    body = {k: v for k, v in {"Policy": policy, "After": after}.items() if v is not None}
    work = api().post(f"/machine/{mac}/erase", body)
    said = f"Queued work {work['ID']} on {mac}: erase ({work['EraseAsked']})"
    show(work, as_json, lambda _: click.echo(said))


@click.command()
@click.argument("mac")
@click.option("--cancel", "cancel_id", type=int, metavar="ID", help="Cancel queued work ID.")
@json_option
def queue(mac: str, cancel_id: int | None, as_json: bool) -> None:
    """The machine's queued and running work (or --cancel one)."""
    server = api()
    if cancel_id is not None:
        cancelled = server.delete(f"/machine/{mac}/boot/queue/{cancel_id}")
        show(cancelled, as_json, lambda w: click.echo(f"Work {w['ID']} {w['State']}"))
        return
    show_table(
        server.get(f"/machine/{mac}/boot/queue"),
        as_json,
        [
            ("ID", "ID"),
            ("STATE", "State"),
            ("SETUP", "Name"),
            ("OWNER", "Username"),
            ("CREATED", "CreatedAt"),
        ],
    )


EVENT_COLUMNS = [("AT", "At"), ("ACTOR", "Actor"), ("ACTION", "Action"), ("DETAIL", "Detail")]


@click.command()
@click.argument("mac", required=False)
@click.option("-f", "--follow", is_flag=True, help="Print events as they happen (Ctrl-C ends).")
@click.option("--until", metavar="ACTION", help="With -f: exit once an event ACTION happens.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@json_option
def events(mac: str | None, follow: bool, until: str | None, limit: int, as_json: bool) -> None:
    """The events of machine MAC (boot answers, work, power actions), or
    without MAC the whole audit log (admins).  With -f, those to come (of
    everything you may see, without MAC)."""
    server = api()
    if until is not None and not follow:
        raise click.UsageError("--until goes with -f")
    if not follow:
        path = f"/machine/{mac}/events" if mac else f"/events?limit={limit}"
        show_table(server.get(path), as_json, EVENT_COLUMNS)
        return
    query = {"machine": mac} if mac else {}
    with server.events(**query) as stream:
        for kind, data in stream:
            if kind != "event":
                continue
            if as_json:
                click.echo(json.dumps(data))
            else:
                target = data["MAC"] or f"{data['TargetType']}:{data['Target']}"
                click.echo(
                    f"{data['At']} {target} {data['Actor']} {data['Action']} {data['Detail']}"
                )
            if data["Action"] == until:
                return


@click.command()
@click.argument("mac")
@click.option(
    "-f", "--follow", is_flag=True, help="Print new lines as they come, while the machine has work."
)
@json_option
def logs(mac: str, follow: bool, as_json: bool) -> None:
    """What the management OS logged on the machine."""
    server = api()

    def render(lines: list[dict]) -> None:
        for line in lines:
            if as_json and follow:
                click.echo(json.dumps(line))
            elif not as_json:
                click.echo(f"{line['At']} {line['Level']:<5} {line['Origin']}: {line['Message']}")

    if not follow:
        show(server.get(f"/machine/{mac}/logs"), as_json, render)
        return
    # Followed on the event stream (opened first: nothing is missed between
    # the lines so far and the new ones), one JSON object a line with
    # --json, until the machine's work ends.
    with server.events(machine=mac) as stream:
        lines = server.get(f"/machine/{mac}/logs")
        render(lines)
        seen = max([0, *(line["ID"] for line in lines)])
        if server.get(f"/machine/{mac}").get("Progress") is None:
            return
        for kind, data in stream:
            if kind == "log" and data["ID"] > seen:
                seen = data["ID"]
                render([{k: v for k, v in data.items() if k != "MAC"}])
            elif kind == "progress" and data["Progress"] is None:
                return
