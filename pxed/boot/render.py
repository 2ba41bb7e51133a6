"""A boot answer as the client reads it: pixiecore's API-mode JSON
(``/v1/boot/<mac>``), an iPXE script (``/ipxe/<mac>``), and iPXE's first
script (``/ipxe``), rendered once to the bytes both the fast path and the
routes send."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from twisted.web.iweb import IRequest

from pxed.boot.decision import BootParams, Decision
from pxed.errors import error_json

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"


@dataclass(frozen=True)
class Rendered:
    code: int
    content_type: bytes
    body: bytes

    def send(self, request: IRequest) -> bytes:
        """Set the answer's status and headers on *request*; its body."""
        request.setResponseCode(self.code)
        request.setHeader(b"content-type", self.content_type)
        # Firmware HTTP clients may read only Content-Length, never chunks.
        request.setHeader(b"content-length", b"%d" % len(self.body))
        return self.body


# pixiecore runs the cmdline through Go's text/template twice (its URL
# function, then its ID function: pixiecore/booters.go, pixiecore/http.go).
# Ours is plain text, as in the iPXE script, so each "{{" goes as an action
# printing an action printing "{{".
_GO_LEFT_DELIM_TWICE = '{{"{{"}}"{{"{{"}}"}}'


def _go_template_text(text: str) -> str:
    return text.replace("{{", _GO_LEFT_DELIM_TWICE)


def pixiecore(decision: Decision, p: BootParams | None) -> Rendered:
    if p is None:
        # pixiecore reads a 404 as "ignore this machine": it boots locally.
        return Rendered(404, JSON, error_json(decision.reason))
    answer = {
        "kernel": p.kernel,
        "initrd": list(p.initrd),
        "cmdline": _go_template_text(p.cmdline),
        "message": f"pxed: {decision.reason}",
    }
    return Rendered(200, JSON, json.dumps(answer).encode() + b"\n")


def _ipxe_quote(text: str) -> str:
    # iPXE expands ${...} in script lines; nothing of ours should be expanded.
    return text.replace("$", "")


def ipxe(decision: Decision, p: BootParams | None) -> Rendered:
    if p is None:
        # Leave iPXE so the firmware goes on to the next boot device (the disk).
        reason = _ipxe_quote(decision.reason)
        return _script(f"#!ipxe\necho pxed: {reason}; booting from local disk\nexit\n")
    names = [f"initrd{i}" for i in range(len(p.initrd))]
    # initrd=<name> lets the EFI stub find each initrd; BIOS kernels ignore it.
    args = " ".join([f"initrd={n}" for n in names] + [p.cmdline])
    lines = ["#!ipxe", f"echo pxed: {_ipxe_quote(decision.reason)}", f"kernel {p.kernel} {args}"]
    lines += [f"initrd --name {n} {url}" for n, url in zip(names, p.initrd, strict=True)]
    lines.append("boot")
    return _script("\n".join(lines) + "\n")


def ipxe_chain(base_url: str) -> Rendered:
    """iPXE's first script: ask again with the MAC it booted from."""
    return _script(f"#!ipxe\nchain --autofree {base_url}/ipxe/${{net0/mac}}\n")


def _script(text: str) -> Rendered:
    return Rendered(200, TEXT, text.encode())


Renderer = Callable[[Decision, BootParams | None], Rendered]


@dataclass(frozen=True)
class Format:
    """How one kind of client is answered: its name (in the answer log),
    the route it asks on, and the renderer."""

    name: str
    route: str
    render: Renderer

    @property
    def prefix(self) -> bytes:
        """The route's path before its MAC."""
        return self.route.partition("<")[0].encode()


PIXIECORE = Format("pixiecore", "/v1/boot/<mac>", pixiecore)
IPXE = Format("ipxe", "/ipxe/<mac>", ipxe)
# The boot routes that answer a MAC, and iPXE's first script's.
FORMATS = (PIXIECORE, IPXE)
CHAIN = "/ipxe"
