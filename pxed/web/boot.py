"""The netboot answer, for pixiecore (/v1/boot/{mac}) and iPXE (/ipxe).

Answers come from the boot view (pxed.bootview), not from the database:
``answer_now`` answers from memory when the view holds every change made
before the request came in and the answer needs no new credential.  The
front resource (BootFront) asks it first, before any routing; when it
cannot answer (a load of the view or a credential is due) the request
goes on to the Klein routes below, which wait for those and answer the
same way."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from pxed import bootconfig, macaddr
from pxed.answerlog import AnswerLog
from pxed.bootview import BootEntry, BootView
from pxed.config import Config
from pxed.db import credentials, enlist
from pxed.db.pool import DBPool
from pxed.errors import BadRequest, DatabaseBusy, NotFound, error_json
from pxed.metrics import Metrics
from pxed.mgmtosbuild import ManagementOS
from pxed.web import router
from pxed.web.auth import actor
from pxed.web.origin import Origin
from pxed.web.router import route

Answer = tuple[bootconfig.Decision, bootconfig.BootParams | None]

# Client addresses remembered as on or off the boot networks.
_CLIENT_CACHE = 4096
# The management OS an unknown machine enlists with (its architecture is
# not known before it reports it).
ENLIST_ARCH = "x86_64"


class BootResource:
    def __init__(
        self,
        db: DBPool,
        config: Config,
        origin: Origin,
        view: BootView,
        answers: AnswerLog,
        metrics: Metrics,
        mgmtos: ManagementOS | None = None,
    ) -> None:
        self._db = db
        self._mgmtos = mgmtos
        self._metrics = metrics
        self._config = config
        self._origin = origin
        self._networks = bootconfig.networks(config.boot_networks)
        self._clients: dict[str | None, tuple[str | None, bool]] = {}
        # (architecture, base URL, MAC, token) -> the answer's parameters
        # (an enlistment token is not a machine's: its prefix differs)
        self._params: dict[tuple[str, str, str, str], bootconfig.BootParams] = {}
        # The view's key: machine.key, read once at start.
        self._key = view.key
        self._view = view
        self._answers = answers

    def answer_now(self, request: IRequest, mac: str, via: str, needed: int) -> Answer | None:
        """The answer, if the view has seen change *needed* and holds the
        credential the answer hands out; None otherwise."""
        if self._view.seen < needed:
            return None
        try:
            mac = macaddr.normalise(mac)
        except BadRequest:
            return bootconfig.Decision(False, "not a MAC address"), None
        address, on_network = self._client(request)
        entry = self._view.get(mac)
        if on_network:
            decision, params = self._decide(request, entry, mac)
            if decision.serve and params is None:
                return None  # a credential to mint first
        else:
            # Netboot is unauthenticated: only the networks machines boot
            # from are answered; elsewhere the same answer as an unknown MAC.
            decision, params = bootconfig.Decision(False, "client not on a boot network"), None
        self._metrics.boot_answered(entry is not None, params is not None)
        if entry is not None:
            served = "management OS" if params is not None else "local disk"
            self._answers.record(
                entry.machine.id,
                actor(request),
                f"{served}: {decision.reason}",
                f"last asked via {via} for {mac} from {address or '-'}",
            )
        return decision, params

    def _client(self, request: IRequest) -> tuple[str | None, bool]:
        """The client's address and whether it is on a boot network,
        remembered by the socket's host string (machines ask again)."""
        host = getattr(request.getClientAddress(), "host", None)
        known = self._clients.get(host)
        if known is None:
            if len(self._clients) >= _CLIENT_CACHE:
                self._clients.clear()
            address = bootconfig.client_address(request)
            known = (address, bootconfig.on_boot_network(address, self._networks))
            self._clients[host] = known
        return known

    def _decide(
        self, request: IRequest, entry: BootEntry | None, mac: str
    ) -> tuple[bootconfig.Decision, bootconfig.BootParams | None]:
        if entry is None and self._config.enlist:
            return self._enlist(request, mac)
        decision = bootconfig.decide(
            None if entry is None else entry.machine,
            self._config.boot_policy,
            entry is not None and entry.work is not None,
        )
        if not decision.serve:
            return decision, None
        assert entry is not None
        if entry.machine.architecture not in self._config.mgmtos:
            reason = f"no management OS for {entry.machine.architecture}"
            return bootconfig.Decision(False, reason), None
        if self._building(entry.machine.architecture):
            # Its files are not there yet: the disk, and the work waits.
            reason = f"the management OS for {entry.machine.architecture} is being built"
            return bootconfig.Decision(False, reason), None
        token = self._view.token(entry)
        if token is None:
            return decision, None
        return decision, self._params_for(request, entry.machine.architecture, mac, token)

    def _params_for(
        self, request: IRequest, arch: str, mac: str, token: str, mode: str | None = None
    ) -> bootconfig.BootParams:
        key = (arch, self._origin.base_url(request), mac, token)
        params = self._params.get(key)
        if params is None:
            if len(self._params) >= _CLIENT_CACHE:
                self._params.clear()
            files = self._config.mgmtos[arch]
            params = self._params[key] = bootconfig.params(files, key[1], mac, token, mode)
        return params

    def _enlist(
        self, request: IRequest, mac: str
    ) -> tuple[bootconfig.Decision, bootconfig.BootParams | None]:
        """An unknown MAC, with enlistment on: the management OS in enlist
        mode with the MAC's enlistment credential (None: mint it first),
        unless max_enlisting are live."""
        if ENLIST_ARCH not in self._config.mgmtos:
            return bootconfig.Decision(False, f"no management OS for {ENLIST_ARCH} to enlist"), None
        if self._building(ENLIST_ARCH):
            reason = f"the management OS for {ENLIST_ARCH} is being built"
            return bootconfig.Decision(False, reason), None
        token = self._view.enlist_token(mac)
        if token is None:
            if self._view.enlist_refused(mac, self._config.max_enlisting):
                reason = "unknown MAC address; enlistment is full (max_enlisting)"
                return bootconfig.Decision(False, reason), None
            return bootconfig.Decision(True, "unknown MAC address: enlisting"), None
        params = self._params_for(request, ENLIST_ARCH, mac, token, "enlist")
        return bootconfig.Decision(True, "unknown MAC address: enlisting"), params

    def _building(self, arch: str) -> bool:
        return self._mgmtos is not None and self._mgmtos.building(arch)

    async def _answer(self, request: IRequest, mac: str, via: str) -> Answer:
        """The answer once the view has caught up with the request (and the
        credential it needs is minted)."""
        needed = self._view.changes
        for _ in range(3):
            await self._view.ready(needed)
            found = self.answer_now(request, mac, via, needed)
            if found is not None:
                return found
            entry = self._view.get(macaddr.normalise(mac))
            if entry is None:
                await self._mint_enlist(macaddr.normalise(mac))
            else:
                await self._mint(entry)
        # Changes kept replacing the credential under us: try again later.
        raise DatabaseBusy()

    async def _mint(self, entry: BootEntry) -> None:
        """The credential for the management OS: one per work item, minted
        on the first answer that serves it and the same in every later one
        (pixiecore and iPXE ask several times per boot), scoped to the
        machine's own image and the images of its work, gone with the work."""
        lifetime = dt.timedelta(hours=self._config.machine_token_hours)
        token, expires = await self._db.run(
            credentials.thd_for_answer,
            self._key,
            entry.machine.id,
            entry.work_id,
            entry.scope,
            lifetime,
        )
        self._view.minted(entry, token, expires)

    async def _mint_enlist(self, mac: str) -> None:
        """The enlistment credential of an unknown MAC: one per MAC, the
        same in every answer until it is spent or expires."""
        lifetime = dt.timedelta(hours=self._config.machine_token_hours)
        found = await self._db.run(
            enlist.thd_for_answer, self._key, mac, lifetime, self._config.max_enlisting
        )
        self._view.enlist_minted(mac, found)

    @route("/v1/boot/<mac>", ["GET"], access="public")
    async def pixiecore_boot(self, request: IRequest, mac: str) -> dict:
        return pixiecore_answer(*await self._answer(request, mac, "pixiecore"))

    @route("/ipxe/<mac>", ["GET"], access="public")
    async def ipxe_boot(self, request: IRequest, mac: str) -> str:
        return ipxe_answer(*await self._answer(request, mac, "ipxe"))

    @route("/ipxe", ["GET"], access="public")
    async def ipxe_chain(self, request: IRequest) -> str:
        return self.chain(request)

    def chain(self, request: IRequest) -> str:
        """iPXE's first script: ask again with the MAC it booted from."""
        return bootconfig.ipxe_chain(self._origin.base_url(request))

    def front(self, inner: IResource) -> IResource:
        return BootFront(inner, self)

    @property
    def changes(self) -> int:
        return self._view.changes

    @property
    def log_answers(self) -> bool:
        return self._config.log_boot_answers


def pixiecore_answer(decision: bootconfig.Decision, params: bootconfig.BootParams | None) -> dict:
    if params is None:
        # pixiecore reads a 404 as "ignore this machine": it boots locally.
        raise NotFound(decision.reason)
    return bootconfig.pixiecore(params, f"pxed: {decision.reason}")


def ipxe_answer(decision: bootconfig.Decision, params: bootconfig.BootParams | None) -> str:
    if params is None:
        return bootconfig.ipxe_exit(decision.reason)
    return bootconfig.ipxe_boot(params, decision.reason)


_PIXIECORE = b"/v1/boot/"
_IPXE = b"/ipxe/"


class BootFront(Resource):
    """In front of the routes: the boot answers the view can give now, with
    no routing and no database; everything else goes on to *inner*.  A
    request with credentials goes on too (its caller is looked up, for the
    event log), as does a path with escapes (the router decodes those)."""

    isLeaf = True

    def __init__(self, inner: IResource, boot: BootResource) -> None:
        super().__init__()
        self._inner = inner
        self._boot = boot
        self._rendered: dict[tuple, tuple[int, bytes, bytes]] = {}

    def render(self, request: IRequest) -> Any:
        if request.method == b"GET":
            answer = self._answer(request)
            if answer is not None:
                request.logged = self._boot.log_answers
                return answer
        return self._inner.render(request)

    def _answer(self, request: IRequest) -> bytes | None:
        path = request.path
        if b"%" in path or request.getHeader(b"authorization") or request.getHeader(b"cookie"):
            return None
        hosts = request.requestHeaders.getRawHeaders(b"host")
        if hosts and not router.host_name(hosts[0]):
            return None  # the router's front (TextPaths) sets it aside
        if path == b"/ipxe":
            request.route = "/ipxe"  # the metrics' label, as the router's
            return router.render(request, self._boot.chain(request))
        if path.startswith(_PIXIECORE):
            mac, via = path[len(_PIXIECORE) :], "pixiecore"
        elif path.startswith(_IPXE):
            mac, via = path[len(_IPXE) :], "ipxe"
        else:
            return None
        if not mac or b"/" in mac:
            return None
        found = self._boot.answer_now(request, mac.decode("latin-1"), via, self._boot.changes)
        if found is None:
            return None
        request.route = _ROUTES[via]
        key = (via, *found)
        rendered = self._rendered.get(key)
        if rendered is None:
            if len(self._rendered) >= _RENDERED:
                self._rendered.clear()
            rendered = self._rendered[key] = _render(via, *found)
        code, content_type, body = rendered
        request.setResponseCode(code)
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"content-length", b"%d" % len(body))
        return body


_ROUTES = {"pixiecore": "/v1/boot/<mac>", "ipxe": "/ipxe/<mac>"}
# Answers kept rendered (one per machine and answer, as they repeat).
_RENDERED = 8192


def _render(
    via: str, decision: bootconfig.Decision, params: bootconfig.BootParams | None
) -> tuple[int, bytes, bytes]:
    """(status, content type, body) as the routes render the answer."""
    if via == "ipxe":
        text = ipxe_answer(decision, params)
        return 200, b"text/plain; charset=utf-8", text.encode()
    try:
        answer = pixiecore_answer(decision, params)
    except NotFound as e:
        return 404, b"application/json", error_json(e.message)
    return 200, b"application/json", json.dumps(answer).encode() + b"\n"
