"""setups: create, show, add, remove."""

from __future__ import annotations

import click

from pxed.cli.client import api
from pxed.cli.output import json_option, show, table


@click.group()
def setups() -> None:
    """Image setups: images frozen at versions, to deploy."""


def _render(setup: dict) -> None:
    click.echo(f"Setup {setup['Name']} ({setup['UUID']}) of {setup['Username']}")
    table(
        setup["Images"],
        [
            ("IMAGE", lambda e: e["Image"]["UUID"]),
            ("NAME", lambda e: e["Image"]["Name"]),
            ("VERSION", lambda e: e["Version"]["Version"]),
            ("UPDATE", lambda e: "yes" if e["Update"] else "no"),
        ],
    )


def _entry(ref: str, update: tuple[str, ...]) -> dict:
    uuid, _, version = ref.partition(":")
    entry: dict = {"UUID": uuid, "Update": uuid in update}
    if version:
        if not version.isdigit():
            raise click.BadParameter(f"{ref}: the version is a number", param_hint="IMAGE")
        entry["Version"] = int(version)
    return entry


@setups.command("create")
@click.argument("name")
@click.argument("image", nargs=-1, required=True, metavar="UUID[:VERSION]...")
@click.option("--update", multiple=True, metavar="UUID", help="Capture this image back after use.")
@click.option("--user", help="Whose setup (default: yours).")
@json_option
def setups_create(name: str, image: tuple[str, ...], update: tuple[str, ...], user, as_json: bool):
    """A setup NAME of the images (each at VERSION, default the latest)."""
    server = api()
    owner = user or server.me()["Username"]
    body = {"Name": name, "Images": [_entry(ref, update) for ref in image]}
    created = server.post(f"/user/{owner}/image_setup", body)
    show(created, as_json, lambda s: click.echo(s["UUID"]))


@setups.command("show")
@click.argument("uuid")
@click.option("--user", help="Whose setup (default: yours).")
@json_option
def setups_show(uuid: str, user: str | None, as_json: bool) -> None:
    """One setup and its images."""
    server = api()
    owner = user or server.me()["Username"]
    show(server.get(f"/user/{owner}/image_setup/{uuid}"), as_json, _render)


@setups.command("add")
@click.argument("uuid")
@click.argument("image", metavar="IMAGE[:VERSION]")
@click.option("--update", is_flag=True, help="Capture this image back after use.")
@click.option("--user", help="Whose setup (default: yours).")
@json_option
def setups_add(uuid: str, image: str, update: bool, user: str | None, as_json: bool) -> None:
    """Add an image (at VERSION, default the latest) to the setup UUID."""
    server = api()
    owner = user or server.me()["Username"]
    entry = _entry(image, (image.partition(":")[0],) if update else ())
    show(server.post(f"/user/{owner}/image_setup/{uuid}/images", entry), as_json, _render)


@setups.command("remove")
@click.argument("uuid")
@click.argument("image")
@click.option("--user", help="Whose setup (default: yours).")
@json_option
def setups_remove(uuid: str, image: str, user: str | None, as_json: bool) -> None:
    """Remove the image IMAGE (its UUID) from the setup UUID."""
    server = api()
    owner = user or server.me()["Username"]
    path = f"/user/{owner}/image_setup/{uuid}/images"
    show(server.delete(path, params={"UUID": image}), as_json, _render)
