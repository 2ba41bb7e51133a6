"""images: list, show, create, delete, upload, import, download."""

from __future__ import annotations

import time
from pathlib import Path

import click

from pxed.cli.client import SERVER_ERROR, CliError, api
from pxed.cli.output import fields, json_option, show, show_table, size, table
from pxed.cli.transfer import CHUNK, Progress, chunks, sha256_of

IMAGE_FIELDS = (
    "UUID", "Name", "Username", "Type", "DiskCompressionStrategy", "ImageFileType",
    "Filesystem", "Size", "Checksum", "CreatedAt",
)  # fmt: skip


@click.group()
def images() -> None:
    """Disk images and their versions."""


@images.command("list")
@click.option("--user", help="Whose images (default: yours; others' for moderators).")
@json_option
def images_list(user: str | None, as_json: bool) -> None:
    """Your images."""
    server = api()
    owner = user or server.me()["Username"]
    show_table(
        server.get(f"/user/{owner}/images"),
        as_json,
        [
            ("UUID", "UUID"),
            ("NAME", "Name"),
            ("VERSIONS", lambda i: len(i["Versions"])),
            ("LATEST SIZE", lambda i: size(i["Versions"][-1]["Size"]) if i["Versions"] else ""),
            ("COMPRESSION", "DiskCompressionStrategy"),
        ],
    )


def _render_image(image: dict) -> None:
    fields(image, IMAGE_FIELDS)
    click.echo("Versions:")
    table(
        image["Versions"],
        [
            ("  VERSION", lambda v: f"  {v['Version']}"),
            ("SIZE", lambda v: size(v["Size"])),
            ("SHA256", lambda v: v.get("Checksum") or v.get("Sha256") or ""),
            ("CREATED", "CreatedAt"),
        ],
    )


@images.command("show")
@click.argument("uuid")
@json_option
def images_show(uuid: str, as_json: bool) -> None:
    """One image and its versions."""
    show(api().get(f"/image/{uuid}"), as_json, _render_image)


@images.command("create")
@click.argument("name")
@click.option("--size", type=int, help="Bytes of version 0, an empty disk (default 512 MiB).")
@click.option("--compression", type=click.Choice(["none", "zstd"]), help="DiskCompressionStrategy.")
@click.option("--filesystem", help="Format version 0: ext4 or fat32.")
@click.option("--type", "image_type", help="Image type (the server's default: base).")
@json_option
def images_create(name, size, compression, filesystem, image_type, as_json: bool) -> None:
    """A new image called NAME."""
    body: dict = {"Name": name}
    for key, value in (
        ("Size", size),
        ("DiskCompressionStrategy", compression),
        ("Filesystem", filesystem),
        ("Type", image_type),
    ):
        if value is not None:
            body[key] = value
    created = api().post("/image", body)
    show(created, as_json, lambda i: click.echo(i["UUID"]))


@images.command("delete")
@click.argument("uuid")
def images_delete(uuid: str) -> None:
    """Delete an image and every version of it."""
    api().delete(f"/image/{uuid}")
    click.echo(f"Deleted {uuid}")


@images.command("upload")
@click.argument("uuid")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Replace the latest version instead of adding one.")
@json_option
def images_upload(uuid: str, file: Path, replace: bool, as_json: bool) -> None:
    """Upload FILE as the image's next version, streamed, with its sha256
    for the server to check."""
    server = api()
    total = file.stat().st_size
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(total),
        "X-Checksum-Sha256": sha256_of(file),
    }
    if replace:
        headers["X-BAAS-NewVersion"] = "false"
    bar = Progress(f"upload {file.name}", total)
    version = server.post_raw(f"/image/{uuid}", chunks(file, bar), headers)
    bar.finish()
    show(version, as_json, lambda v: click.echo(f"Uploaded version {v['Version']} of {uuid}"))


# Seconds between looks at the image's events while an import runs.
IMPORT_POLL = 1.0


@images.command("import")
@click.argument("uuid")
@click.argument("url")
@click.option("--sha256", help="The file's sha256 (as fetched): a mismatch stores nothing.")
@click.option("--wait/--no-wait", default=True, help="Follow the import to its end (default).")
@json_option
def images_import(uuid: str, url: str, sha256: str | None, wait: bool, as_json: bool) -> None:
    """Have the server fetch URL (http or https) as the image's next version;
    qcow2, VMDK, VHDX and xz become the raw disk they hold.  Progress goes to
    stderr; exits 1 with the reason if the import fails."""
    server = api()
    body = {"URL": url} | ({"Sha256": sha256} if sha256 else {})
    started = server.post(f"/image/{uuid}/import", body)
    job = started["ID"]
    if not wait:
        show(started, as_json, lambda s: click.echo(f"Import {s['ID']} started"))
        return
    mark = f"import={job} "
    seen: set[int] = set()
    while True:
        events = [
            e
            for e in reversed(server.get(f"/image/{uuid}/events"))
            if e["Detail"].startswith(mark) and e["ID"] not in seen
        ]
        for event in events:
            seen.add(event["ID"])
            detail = event["Detail"].removeprefix(mark)
            if event["Action"] == "image.import.failed":
                raise CliError(f"import {job} failed: {detail}")
            if event["Action"] == "image.import.done":
                version = dict(item.split("=", 1) for item in detail.split() if "=" in item)
                show(
                    {"ID": job, **version},
                    as_json,
                    lambda v: click.echo(f"Imported version {v['version']} of {uuid}"),
                )
                return
            click.echo(detail, err=True)
        time.sleep(IMPORT_POLL)


@images.command("download")
@click.argument("ref", metavar="UUID[:VERSION]")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def images_download(ref: str, file: Path) -> None:
    """Download a version (default the latest) to FILE, resuming a partial
    FILE.part left by an interrupted download, and check its sha256."""
    uuid, _, version = ref.partition(":")
    path = f"/image/{uuid}/{version or 'latest'}"
    server = api()
    partial = file.with_name(file.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    head = server.request("HEAD", path)
    etag = head.headers.get("etag", "")
    size = int(head.headers.get("content-length", -1))
    if have == size and etag:
        resumed = True  # all there already: only the check is left
    else:
        resumed = _fetch(server, path, partial, have if 0 < have < size else 0, etag)
    expected = etag.strip('"')
    actual = sha256_of(partial)
    if expected and actual != expected:
        partial.unlink()
        raise CliError(f"sha256 mismatch: got {actual}, the server says {expected}", SERVER_ERROR)
    partial.replace(file)
    click.echo(f"Saved {file} (sha256 {actual}{', resumed' if resumed else ''})")


def _fetch(server, path: str, partial: Path, have: int, etag: str) -> bool:
    """The version into *partial*, from byte *have* on if the server still
    has the same bytes (If-Range), else whole; whether it resumed."""
    headers = {"Range": f"bytes={have}-", "If-Range": etag} if have and etag else {}
    with server.stream("GET", path, headers=headers) as response:
        resumed = response.status_code == 206
        start = have if resumed else 0
        length = int(response.headers.get("content-length", 0))
        bar = Progress(f"download {partial.name.removesuffix('.part')}", start + length, done=start)
        with partial.open("ab" if resumed else "wb") as out:
            for chunk in response.iter_bytes(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
        bar.finish()
    return resumed
