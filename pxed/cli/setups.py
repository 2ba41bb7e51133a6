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
            ("DISK", _disk),
        ],
    )


def _disk(entry: dict) -> str:
    hints = entry.get("DiskHints")
    if not hints:
        return "by kernel order"
    return " ".join(f"{k}={v}" for k, v in hints.items())


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(ctx, param, value: str | None) -> int | None:
    """Bytes, or a number with K, M, G or T (powers of 1024, "GiB" too)."""
    if value is None:
        return None
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "")
    try:
        size = int(float(number) * _UNITS[unit])
    except ValueError:
        raise click.BadParameter(f"{value!r}: a size such as 500G or 2T") from None
    if size <= 0:
        raise click.BadParameter(f"{value!r}: a size above 0")
    return size


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
@click.option("--serial", help="Root device hint: the disk with this serial number.")
@click.option("--wwn", help="Root device hint: the disk with this WWN.")
@click.option("--model", help="Root device hint: the disk of this model.")
@click.option("--min-size", callback=_size, help="Root device hint: at least this big (500G).")
@click.option("--max-size", callback=_size, help="Root device hint: at most this big (2T).")
@click.option("--rotational/--solid-state", default=None, help="Root device hint: spinning or not.")
@click.option("--by-path", help="Root device hint: its /dev/disk/by-path name.")
@json_option
def setups_add(
    uuid: str, image: str, update: bool, user: str | None, as_json: bool, **hints
) -> None:
    """Add an image (at VERSION, default the latest) to the setup UUID, or
    change it.  With root device hints the image goes to the one disk that
    matches them all, not to the disk its position names."""
    server = api()
    owner = user or server.me()["Username"]
    entry = _entry(image, (image.partition(":")[0],) if update else ())
    names = {"serial": "Serial", "wwn": "WWN", "model": "Model", "min_size": "MinSize",
             "max_size": "MaxSize", "rotational": "Rotational", "by_path": "ByPath"}  # fmt: skip
    given = {names[k]: v for k, v in hints.items() if v is not None}
    if given:
        entry["DiskHints"] = given
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
