"""build IMAGE DOCKERFILE [--context DIR] [-f]: a new version of the image
built from a Dockerfile by the server, its log streamed as it runs."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import click

from pxed.cli.client import SERVER_ERROR, CliError, api
from pxed.cli.output import emit_json, json_option


@click.command()
@click.argument("image")
@click.argument("dockerfile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--context",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A directory sent as the build context (as a .tar.gz).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["disk", "tar", "initramfs"]),
    help="What the version is (the server's default: disk).",
)
@click.option("-f", "--follow", is_flag=True, help="Print the log as it runs; exit 1 if it fails.")
@json_option
def build(image: str, dockerfile: Path, context, fmt, follow: bool, as_json: bool) -> None:
    """Build a new version of IMAGE (its UUID) from DOCKERFILE."""
    server = api()
    # The context is packed into a temporary file, not memory, and streamed.
    with tempfile.TemporaryFile() as packed, dockerfile.open("rb") as text:
        files: dict = {"file": ("Dockerfile", text, "text/plain")}
        if context is not None:
            with tarfile.open(fileobj=packed, mode="w:gz") as tar:
                tar.add(context, arcname=".")
            packed.seek(0)
            files["context"] = ("context.tar.gz", packed, "application/gzip")
        data = {"format": fmt} if fmt else {}
        submitted = server.request("POST", f"/image/{image}/docker", files=files, data=data).json()
    build_id = submitted["ID"]
    if not follow:
        if as_json:
            emit_json(submitted)
        else:
            click.echo(f"Build {build_id} {submitted['State']}")
        return
    # The log answer stays open while the build runs (GET /build/{id}/log).
    with server.stream("GET", f"/build/{build_id}/log", timeout=None) as log:
        for text in log.iter_text():
            click.echo(text, nl=False, err=as_json)
    finished = server.get(f"/build/{build_id}")
    if as_json:
        emit_json(finished)
    if finished["State"] != "succeeded":
        reason = f": {finished['Message']}" if finished["Message"] else ""
        raise CliError(f"build {build_id} {finished['State']}{reason}", SERVER_ERROR)
    if not as_json:
        click.echo(f"Build {build_id} succeeded: version {finished['Version']} of {image}")
