"""The netboot routes: pixiecore's ``/v1/boot/<mac>``, iPXE's
``/ipxe/<mac>`` and iPXE's first script ``/ipxe``.  The answer is the boot
package's (pxed.boot.answers); the routes and the front resource that
answers before any routing take their paths and rendering from the same
table (pxed.boot.render.FORMATS)."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from pxed.boot.answers import BootAnswers
from pxed.boot.render import CHAIN, FORMATS, IPXE, PIXIECORE
from pxed.web import router
from pxed.web.router import route

# The routes' answers are bodies rendered by pxed.boot.render, status and
# headers set; named by what they hold for /openapi.json.
JSONBody = bytes
TextBody = bytes


class BootResource:
    def __init__(self, answers: BootAnswers) -> None:
        self._answers = answers

    @route(PIXIECORE.route, ["GET"], access="public")
    async def pixiecore_boot(self, request: IRequest, mac: str) -> JSONBody:
        return (await self._answers.answer(request, mac, PIXIECORE)).send(request)

    @route(IPXE.route, ["GET"], access="public")
    async def ipxe_boot(self, request: IRequest, mac: str) -> TextBody:
        return (await self._answers.answer(request, mac, IPXE)).send(request)

    @route(CHAIN, ["GET"], access="public")
    async def ipxe_chain(self, request: IRequest) -> TextBody:
        return self._answers.chain(request).send(request)

    def front(self, inner: IResource) -> IResource:
        return BootFront(inner, self._answers)


class BootFront(Resource):
    """In front of the routes: the boot answers the view can give now, with
    no routing and no database; everything else goes on to *inner*.  A
    request with credentials goes on too, as does a path with escapes (the
    router decodes those) or a Host the router sets aside."""

    isLeaf = True

    def __init__(self, inner: IResource, answers: BootAnswers) -> None:
        super().__init__()
        self._inner = inner
        self._answers = answers

    def render(self, request: IRequest) -> Any:
        if request.method == b"GET":
            body = self._answer(request)
            if body is not None:
                request.logged = self._answers.log_answers
                return body
        return self._inner.render(request)

    def _answer(self, request: IRequest) -> bytes | None:
        path = request.path
        if b"%" in path or request.getHeader(b"authorization") or request.getHeader(b"cookie"):
            return None
        hosts = request.requestHeaders.getRawHeaders(b"host")
        if hosts and not router.host_name(hosts[0]):
            return None  # the router's front (TextPaths) sets it aside
        if path == _CHAIN:
            request.route = CHAIN  # the metrics' label, as the router's
            return self._answers.chain(request).send(request)
        for fmt in FORMATS:
            if path.startswith(fmt.prefix):
                mac = path[len(fmt.prefix) :]
                if not mac or b"/" in mac:
                    return None
                found = self._answers.now(request, mac.decode("latin-1"), fmt)
                if found is None:
                    return None
                request.route = fmt.route
                return found.send(request)
        return None


_CHAIN = CHAIN.encode()
