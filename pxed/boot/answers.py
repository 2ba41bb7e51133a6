"""One boot answer, from the request to the bytes sent: the client's
network, the view's entry for the MAC, the decision, the credential it
hands out (minted ahead, pxed.boot.minting, or first when the view has
none), the parameters and the rendering, with the answer counted and
recorded.

``now`` answers from memory when the view holds every change made before
the request came in and the answer needs no new credential: the front
resource asks it before any routing.  ``answer`` waits for the view, and
mints, when ``now`` cannot."""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.iweb import IRequest

from pxed import macaddr
from pxed.boot import networks, render
from pxed.boot.answerlog import AnswerLog
from pxed.boot.credentials import Credentials
from pxed.boot.decision import (
    ENLIST,
    ENLIST_FULL,
    NOT_A_MAC,
    OFF_NETWORK,
    BootParams,
    Decision,
    decide,
    params,
)
from pxed.boot.minting import WorkMints
from pxed.boot.render import Format, Rendered
from pxed.boot.view import BootView
from pxed.config import Config
from pxed.errors import BadRequest, DatabaseBusy
from pxed.metrics import Metrics
from pxed.mgmtosbuild import ManagementOS

Answer = tuple[Decision, BootParams | None]

# Client addresses remembered as on or off the boot networks, answers'
# parameters and rendered answers kept (one per machine and answer: they
# repeat).
_CLIENT_CACHE = 4096
_PARAMS_CACHE = 4096
_RENDERED_CACHE = 8192
# The boot routes take no credential: who asked is nobody in particular.
ACTOR = "anonymous"


class BootAnswers:
    def __init__(
        self,
        config: Config,
        view: BootView,
        credentials: Credentials,
        answers: AnswerLog,
        metrics: Metrics,
        base_url: Callable[[IRequest], str],
        mgmtos: ManagementOS | None = None,
    ) -> None:
        self._config = config
        self._view = view
        self.credentials = credentials
        self._mints = WorkMints(credentials, view)
        self._answers = answers
        self._metrics = metrics
        self._base_url = base_url
        self._mgmtos = mgmtos
        self._networks = networks.networks(config.boot_networks)
        self._clients: dict[str | None, tuple[str | None, bool]] = {}
        # (architecture, base URL, MAC, token, mode) -> the parameters
        self._params: dict[tuple[str, str, str, str, str | None], BootParams] = {}
        self._rendered: dict[tuple[str, Decision, BootParams | None], Rendered] = {}

    @property
    def changes(self) -> int:
        return self._view.changes

    @property
    def log_answers(self) -> bool:
        return self._config.log_boot_answers

    def now(
        self, request: IRequest, mac: str, fmt: Format, needed: int | None = None
    ) -> Rendered | None:
        """The answer, if the view has seen change *needed* (default: every
        change so far that concerns the MAC's machine) and holds the
        credential it hands out; else None."""
        normal = _normal(mac)
        if self._view.seen < (self._view.needed(normal) if needed is None else needed):
            return None
        found = self._decide(request, normal, fmt.name)
        if found is None:
            return None
        key = (fmt.name, *found)
        rendered = self._rendered.get(key)
        if rendered is None:
            if len(self._rendered) >= _RENDERED_CACHE:
                self._rendered.clear()
            rendered = self._rendered[key] = fmt.render(*found)
        return rendered

    async def answer(self, request: IRequest, mac: str, fmt: Format) -> Rendered:
        """The answer once the view has caught up with the request (and the
        credential it needs is minted)."""
        normal = _normal(mac)
        needed = self._view.needed(normal)
        for _ in range(3):
            await self._view.ready(needed)
            # A MAC the view did not hold when this began needed only the
            # changes that concern every machine; now that it holds it, the
            # changes of its own machine since (its work queued) count too.
            while (again := self._view.needed(normal)) > needed:
                needed = again
                await self._view.ready(needed)
            found = self.now(request, mac, fmt, needed)
            if found is not None:
                return found
            # A credential to mint: decided from the view, so the MAC is one.
            await self._mint(macaddr.normalise(mac))
        # Changes kept replacing the credential under us: try again later.
        raise DatabaseBusy()

    def chain(self, request: IRequest) -> Rendered:
        return render.ipxe_chain(self._base_url(request))

    def _decide(self, request: IRequest, mac: str, via: str) -> Answer | None:
        """*mac*: normalised ("" for what is not a MAC)."""
        if not mac:
            return NOT_A_MAC, None
        address, on_network = self._client(request)
        entry = self._view.get(mac)
        decision: Decision = OFF_NETWORK
        served: BootParams | None = None
        # Netboot is unauthenticated: only the networks machines boot from
        # are answered; elsewhere the same answer as an unknown MAC.
        if on_network:
            decision = decide(
                entry, self._config.boot_policy, self._config.enlist, self._unavailable
            )
        if decision.serve:
            if decision.mode == ENLIST:
                token = self._view.enlist_token(mac)
                if token is None and self._view.enlist_refused(mac, self._config.max_enlisting):
                    decision = ENLIST_FULL
            else:
                assert entry is not None
                token = self._view.token(entry)
            if decision.serve:
                if token is None:
                    return None
                served = self._params_for(request, decision, mac, token)
        self._metrics.boot_answered(entry is not None, served is not None)
        if entry is not None:
            what = "management OS" if served is not None else "local disk"
            self._answers.record(
                entry.machine.id,
                ACTOR,
                f"{what}: {decision.reason}",
                f"last asked via {via} for {mac} from {address or '-'}",
                entry.work_id if served is not None else None,
            )
        return decision, served

    def _client(self, request: IRequest) -> tuple[str | None, bool]:
        """The client's address and whether it is on a boot network,
        remembered by the socket's host string (machines ask again)."""
        host = getattr(request.getClientAddress(), "host", None)
        known = self._clients.get(host)
        if known is None:
            if len(self._clients) >= _CLIENT_CACHE:
                self._clients.clear()
            address = networks.client_address(request)
            known = (address, networks.on_network(address, self._networks))
            self._clients[host] = known
        return known

    def _unavailable(self, arch: str) -> str | None:
        if arch not in self._config.mgmtos:
            return f"no management OS for {arch}"
        if self._mgmtos is not None and self._mgmtos.building(arch):
            # Its files are not there yet: the disk, and the work waits.
            return f"the management OS for {arch} is being built"
        return None

    def _params_for(
        self, request: IRequest, decision: Decision, mac: str, token: str
    ) -> BootParams:
        assert decision.arch is not None
        key = (decision.arch, self._base_url(request), mac, token, decision.mode)
        found = self._params.get(key)
        if found is None:
            if len(self._params) >= _PARAMS_CACHE:
                self._params.clear()
            files = self._config.mgmtos[decision.arch]
            found = self._params[key] = params(files, key[1], mac, token, decision.mode)
        return found

    async def _mint(self, mac: str) -> None:
        """The credential the answer for *mac* hands out, into the view: the
        machine's work's, or (an unknown MAC) its enlistment credential."""
        entry = self._view.get(mac)
        if entry is None:
            self._view.enlist_minted(mac, await self.credentials.for_enlist(mac))
        else:
            await self._mints.mint(entry)


def _normal(mac: str) -> str:
    """*mac* normalised, "" if it is not a MAC (answered as not one)."""
    try:
        return macaddr.normalise(mac)
    except BadRequest:
        return ""
