"""Who is calling, and whether the route's access rule lets them.

Credentials: ``Authorization: Bearer`` with a user API token (``pxu_…``),
a machine credential (``pxm_…``) or an enlistment credential (``pxe_…``,
which only ``machine-or-enlist`` routes admit), or the ``session-name``
cookie of a browser session.  No header grants anything by itself: the original's
``type: system`` is ignored like any other unknown header."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.web.iweb import IRequest

from pxed import macaddr, secret
from pxed.boot import networks
from pxed.boot.credentials import Credentials
from pxed.db import events, machines, queue, tokens
from pxed.db.credentials import MachineCredential
from pxed.db.enlist import EnlistCredential
from pxed.db.pool import DBPool
from pxed.db.users import User
from pxed.errors import Forbidden, Unauthorized
from pxed.web import body
from pxed.web.origin import Origin

SESSION_COOKIE = b"session-name"
# Double-submit CSRF token of a browser session: a cookie the page's script
# reads and sends back in the header on every request that changes
# something.  Another site can make the browser send the cookie, not read
# it, so not the header.
CSRF_COOKIE = b"pxed-csrf"
CSRF_HEADER = b"x-csrf-token"
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})


@dataclass(frozen=True)
class Identity:
    user: User | None = None
    machine: MachineCredential | None = None
    session_id: str | None = None
    # An unknown machine enlisting: it may register its MAC's inventory.
    enlist: EnlistCredential | None = None

    @property
    def actor(self) -> str:
        if self.user is not None:
            return self.user.username
        if self.machine is not None:
            return f"machine:{self.machine.machine_id}"
        if self.enlist is not None:
            return f"enlist:{self.enlist.mac}"
        return "anonymous"


ANONYMOUS = Identity()


def _user(identity: Identity) -> User:
    if identity.user is None:
        raise Forbidden("this route is for users; a machine credential does not grant it")
    return identity.user


def _signed_in(identity: Identity, args: dict[str, Any]) -> None:
    _user(identity)


def _moderator(identity: Identity, args: dict[str, Any]) -> None:
    if not _user(identity).is_staff:
        raise Forbidden("moderators and admins only")


def _admin(identity: Identity, args: dict[str, Any]) -> None:
    if not _user(identity).is_admin:
        raise Forbidden("admins only")


def _self_or_staff(identity: Identity, args: dict[str, Any]) -> None:
    user = _user(identity)
    if user.username != args["name"] and not user.is_staff:
        raise Forbidden("only that user, moderators and admins")


def _self_or_admin(identity: Identity, args: dict[str, Any]) -> None:
    user = _user(identity)
    if user.username != args["name"] and not user.is_admin:
        raise Forbidden("only that user and admins")


def _machine(identity: Identity, args: dict[str, Any]) -> None:
    # Which machine the path names is checked against the credential by
    # Authenticator.authorise (it needs the database); users must be admins.
    if identity.machine is None:
        _admin(identity, args)


def _machine_or_enlist(identity: Identity, args: dict[str, Any]) -> None:
    # The enlistment credential's MAC is checked by Authenticator.authorise.
    if identity.enlist is None:
        _machine(identity, args)


# Access rule name -> check.  "owner" routes need a signed-in user here and
# compare the resource's owner in the handler (check_owner below).
RULES: dict[str, Callable[[Identity, dict[str, Any]], None] | None] = {
    "public": None,
    "signed-in": _signed_in,
    "moderator": _moderator,
    "admin": _admin,
    "self-or-staff": _self_or_staff,
    "self-or-admin": _self_or_admin,
    "owner": _signed_in,
    "machine": _machine,
    # The same, and an unknown machine enlisting with its MAC's credential.
    "machine-or-enlist": _machine_or_enlist,
    # Owners and staff, or a management OS whose work covers the image
    # (checked by the handler, which knows the image).
    "owner-or-machine": lambda identity, args: None,
    # Admins, or any client in metrics_networks without a credential
    # (Authenticator.authorise checks the address first).
    "metrics": _admin,
    # A machine's power: admins, and users with work queued or in progress
    # on it (Authenticator.authorise asks the database).
    "admin-or-worker": _signed_in,
}


def check_owner(identity: Identity, owner: str | None) -> User:
    """The caller owns the resource, or is a moderator or admin."""
    user = _user(identity)
    if user.username != owner and not user.is_staff:
        raise Forbidden("only the owner, moderators and admins")
    return user


def identity(request: IRequest) -> Identity:
    """Who the router found calling (set before any handler runs)."""
    return getattr(request, "identity", ANONYMOUS)


def actor(request: IRequest) -> str:
    """The caller's name for the event log."""
    return identity(request).actor


def user(request: IRequest) -> User:
    """The signed-in user of a route whose rule admits only users."""
    return _user(identity(request))


class Authenticator:
    """Finds who is calling and applies the route's access rule; the router
    calls ``authorise`` before every handler."""

    def __init__(
        self,
        db: DBPool,
        credentials: Credentials,
        metrics_networks: tuple[networks.Network, ...] = (),
    ) -> None:
        self._db = db
        self._credentials = credentials
        # Access rule -> the networks whose clients it admits as they are.
        self._networks = {"metrics": metrics_networks}

    async def authenticate(self, request: IRequest) -> Identity:
        header = body.header(request, "Authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise Unauthorized("Authorization: expected 'Bearer <token>'")
            kind = self._credentials.kind(token)
            if kind == "machine":
                cred = await self._credentials.machine(token)
                if cred is None:
                    raise Unauthorized("machine credential is invalid, expired or revoked")
                # Bound by the first BootInform to its client: no other.
                address = networks.client_address(request)
                if not cred.admits(address):
                    what = f"{request.method.decode('ascii', 'replace')} {request.path[:200]!r}"
                    await self._credentials.refuse(cred, address, what)
                    raise Forbidden("this machine credential is bound to another client")
                return Identity(machine=cred)
            if kind == "enlist":
                found_enlist = await self._credentials.enlisting(token)
                if found_enlist is None:
                    raise Unauthorized("enlistment credential is invalid, expired or spent")
                return Identity(enlist=found_enlist)
            found = await tokens.user_for_token(self._db, token)
            if found is None:
                raise Unauthorized("API token is invalid, expired or revoked")
            return Identity(user=found)
        session_id = request.getCookie(SESSION_COOKIE)
        if session_id:
            sid = session_id.decode("ascii", "replace")
            found = await self._db.read(tokens.thd_user_for_session, sid)
            if found is None:
                raise Unauthorized("session expired; sign in again")
            return Identity(user=found, session_id=sid)
        return ANONYMOUS

    async def authorise(self, request: IRequest, access: str, args: dict[str, Any]) -> None:
        rule = RULES[access]
        admitted = self._networks.get(access)
        if rule is None or (
            admitted and networks.on_network(networks.client_address(request), admitted)
        ):
            request.identity = ANONYMOUS
            return
        # Found from the headers before the body was read (pxed.web.site),
        # or looked up now.
        who = getattr(request, "preauthenticated", None) or await self.authenticate(request)
        request.identity = who
        if who is ANONYMOUS:
            raise Unauthorized("sign in, or send 'Authorization: Bearer <token>'")
        check_csrf(request, who, request.method in SAFE_METHODS)
        rule(who, args)
        if access == "admin-or-worker":
            await self._check_worker(who, args["mac"])
        if who.machine is not None and "mac" in args:
            machine = await self._db.read(machines.thd_get, macaddr.normalise(args["mac"]))
            if machine is None or machine.id != who.machine.machine_id:
                raise Forbidden("this machine credential is for another machine")
        if who.enlist is not None and (
            "mac" not in args or macaddr.normalise(args["mac"]) != who.enlist.mac
        ):
            raise Forbidden("this enlistment credential is for another MAC address")

    async def _check_worker(self, who: Identity, mac: str) -> None:
        user = _user(who)
        if user.is_admin:
            return
        machine = await self._db.read(machines.thd_get, macaddr.normalise(mac))
        if machine is None or not await self._db.read(
            queue.thd_has_live_work, machine.id, user.username
        ):
            raise Forbidden("admins, and users with work queued on the machine")


def csrf_token(session_id: str) -> str:
    """The session's CSRF token: keyed by the session id, so neither the
    database (which keeps only the id's hash) nor another session gives it."""
    return secret.derive(session_id.encode(), "pxc_", "csrf")


def check_csrf(request: IRequest, who: Identity, safe: bool) -> None:
    """A request from a browser session that changes something must carry
    the session's CSRF token (SameSite alone leaves same-site pages and
    older browsers)."""
    if who.session_id is None or safe:
        return
    sent = request.getHeader(CSRF_HEADER)
    if not sent or not secret.same(sent.decode("ascii", "replace"), csrf_token(who.session_id)):
        raise Forbidden(
            "CSRF token missing or wrong: send the pxed-csrf cookie's value in X-CSRF-Token"
        )


class Sessions:
    """Browser sessions: kept server-side, named by an HttpOnly cookie."""

    def __init__(self, db: DBPool, origin: Origin, hours: float) -> None:
        self._db = db
        self._origin = origin
        self._lifetime = dt.timedelta(hours=hours)

    async def start(self, request: IRequest, user: User) -> str:
        """Start a session for *user*; its CSRF token."""
        session_id = await self._db.run(tokens.thd_create_session, user.username, self._lifetime)
        csrf = csrf_token(session_id)
        self._cookie(request, session_id.encode(), csrf.encode(), self._lifetime.total_seconds())
        return csrf

    async def end(self, request: IRequest) -> None:
        who = identity(request)
        if who.session_id is not None:
            await self._db.run(tokens.thd_delete_session, who.session_id)
            await self._db.run(events.thd_record, who.actor, "user.logout", "user", who.actor)
        self._cookie(request, b"", b"", 0)

    def _cookie(self, request: IRequest, session: bytes, csrf: bytes, max_age: float) -> None:
        age = str(int(max_age)).encode()
        secure = self._origin.secure(request)
        # Lax: the GitHub sign-in comes back to us by a cross-site redirect.
        request.addCookie(
            SESSION_COOKIE,
            session,
            path=b"/",
            max_age=age,
            httpOnly=True,
            secure=secure,
            sameSite="lax",
        )
        # Read by the dashboard's script, so not HttpOnly.
        request.addCookie(
            CSRF_COOKIE, csrf, path=b"/", max_age=age, secure=secure, sameSite="strict"
        )
