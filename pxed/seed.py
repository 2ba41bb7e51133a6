"""The cloud-init NoCloud seed of a deploy: what the machine knows of itself
when it first boots the image its user deployed.

- ``meta-data``: an instance id new for every work (so cloud-init runs
  again after a redeploy) and the hostname, from the machine's name;
- ``user-data``: a ``#cloud-config`` with the hostname and the deploying
  user's SSH public keys, and the user's own user-data beside it when the
  work carries some (a MIME multipart, which cloud-init merges);
- ``network-config``: version 2, DHCP on the NIC with the machine's MAC.

JSON is YAML, so meta-data and network-config are written as JSON and the
cloud-config as ``#cloud-config`` followed by JSON: no YAML library, no
quoting mistakes.  The files go into a 1 MiB FAT filesystem labelled
``CIDATA`` (mkfs.fat and mtools, which pxed already uses for boot disks),
which the agent writes into a partition at the end of the boot disk
(pxed/agent/seed.py).  The user-data may hold secrets: it is written into
the seed and nowhere else, never logged."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

from pxed import tools

SIZE_KIB = 1024
_NOT_HOSTNAME = re.compile(r"[^a-z0-9-]+")
# What cloud-init's user-data handler takes for each first line.
_CONTENT_TYPES = (
    ("#cloud-config", "cloud-config"),
    ("#!", "x-shellscript"),
    ("#cloud-boothook", "cloud-boothook"),
    ("#include", "x-include-url"),
    ("#part-handler", "part-handler"),
    ("## template: jinja", "jinja2"),
)


def hostname(machine_name: str, mac: str) -> str:
    """An RFC 1123 host name from the machine's name (its MAC's when the
    name has nothing usable)."""
    name = _NOT_HOSTNAME.sub("-", machine_name.lower()).strip("-")[:63].strip("-")
    return name or "pxed-" + mac.replace(":", "")


def _user_part(text: str) -> MIMEText:
    first = text.lstrip().split("\n", 1)[0].strip()
    subtype = next((t for prefix, t in _CONTENT_TYPES if first.startswith(prefix)), "plain")
    part = MIMEText(text, subtype, "utf-8")
    part.add_header("Content-Disposition", 'attachment; filename="user-data"')
    return part


def files(
    *, work_id: int, machine_name: str, mac: str, keys: list[str], user_data: str | None
) -> dict[str, bytes]:
    host = hostname(machine_name, mac)
    meta = {"instance-id": f"pxed-{mac.replace(':', '')}-{work_id}", "local-hostname": host}
    config = {
        "hostname": host,
        "preserve_hostname": False,
        "ssh_authorized_keys": keys,
    }
    ours = "#cloud-config\n" + json.dumps(config, indent=2) + "\n"
    if user_data is None:
        user = ours.encode()
    else:
        multipart = MIMEMultipart()
        pxed_part = MIMEText(ours, "cloud-config", "utf-8")
        pxed_part.add_header("Content-Disposition", 'attachment; filename="pxed.cfg"')
        multipart.attach(pxed_part)
        multipart.attach(_user_part(user_data))
        user = multipart.as_bytes()
    network = {
        "version": 2,
        "ethernets": {"boot": {"match": {"macaddress": mac}, "dhcp4": True}},
    }
    return {
        "meta-data": (json.dumps(meta, indent=2) + "\n").encode(),
        "user-data": user,
        "network-config": (json.dumps(network, indent=2) + "\n").encode(),
    }


def make_image(path: Path, contents: dict[str, bytes]) -> None:
    """*path* (a new file, in a directory of its own) as a FAT filesystem
    labelled CIDATA holding *contents*.  Blocking: run it on a pool."""
    mkfs = tools.find("mkfs.fat", package="dosfstools")
    mcopy = tools.find("mcopy", package="mtools")
    tools.run([mkfs, "-C", "-n", "CIDATA", str(path), str(SIZE_KIB)], timeout=60)
    sources = []
    for name, data in contents.items():
        source = path.parent / name
        fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        sources.append(str(source))
    tools.run([mcopy, "-i", str(path), *sources, "::/"], timeout=60, env={"MTOOLS_SKIP_CHECK": "1"})


def build(scratch_parent: Path, contents: dict[str, bytes]) -> bytes:
    """The seed image's bytes, made in a directory of its own under
    *scratch_parent* (pxed's staging, never /tmp: the user-data is in it)
    that is gone when this returns, whatever happens."""
    scratch = Path(tempfile.mkdtemp(prefix="seed-", dir=scratch_parent))
    try:
        image = scratch / "seed.img"
        make_image(image, contents)
        return image.read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
