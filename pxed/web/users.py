"""Users, their API tokens, signing out, and the audit log."""

from __future__ import annotations

import datetime as dt

from twisted.web.iweb import IRequest

from pxed.db import events, tokens, users
from pxed.db.pool import DBPool
from pxed.db.schema import utcnow
from pxed.errors import BadRequest, Forbidden, NotFound
from pxed.imagestore import ImageStore
from pxed.web import render
from pxed.web.auth import Sessions, actor, csrf_token, identity
from pxed.web.auth import user as caller
from pxed.web.body import Fields, header, int_arg, query_args, read_json
from pxed.web.router import route

MAX_TOKEN_DAYS = 3650


def _fields(body: Fields) -> users.UserFields:
    email = body.str("Email")
    if email and "@" not in email:
        raise BadRequest("Email: not an e-mail address")
    role = body.str("Role")
    if role is not None:
        role = users.check_role(role)
    return users.UserFields(name=body.str("Name"), email=email, role=role)


def _bearer(request: IRequest) -> str | None:
    """The API token the request was made with (None: a browser session):
    a token it creates may not outlive it."""
    if identity(request).session_id is not None:
        return None
    scheme, _, token = (header(request, "Authorization") or "").strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class UsersResource:
    def __init__(
        self,
        db: DBPool,
        sessions: Sessions,
        store: ImageStore | None = None,
        on_user_delete: str = "admin",
    ) -> None:
        self._db = db
        self._sessions = sessions
        self._store = store
        self._on_user_delete = on_user_delete

    @route("/user", ["POST"], access="admin")
    async def create_user(self, request: IRequest) -> dict | str:
        body = read_json(request)
        username = body.str("Username", max_length=64)
        if username is None:
            # The original identified users by Name; accept that when it is
            # a valid username.
            name = body.str("Name")
            if name is None:
                raise BadRequest("Username: required")
            username = name
        users.check_username(username)
        user = await self._db.run(users.thd_create, username, _fields(body), actor(request))
        request.setResponseCode(201)
        # The original answered a text; a client asking for JSON gets the user.
        if b"application/json" in (request.getHeader(b"accept") or b""):
            return render.user(user)
        return "Successfully created user"

    @route("/users", ["GET"], access="moderator")
    async def list_users(self, request: IRequest) -> list:
        return [render.user(u) for u in await self._db.run(users.thd_list)]

    @route("/user/me", ["GET"], access="signed-in")
    async def me(self, request: IRequest) -> dict:
        session_id = identity(request).session_id
        if session_id is None:
            return render.user(caller(request))
        # The dashboard's page may have lost its copy of the cookie's value.
        return {**render.user(caller(request)), "CSRF": csrf_token(session_id)}

    async def _target(self, request: IRequest, name: str) -> users.User:
        target = await self._db.run(users.thd_get_or_404, name)
        who = caller(request)
        # Moderators manage users, not other moderators or admins.
        if who.username != name and not who.is_admin and target.is_staff:
            raise Forbidden("only admins manage moderators and admins")
        return target

    @route("/user/<name>", ["GET"], access="self-or-staff")
    async def get_user(self, request: IRequest, name: str) -> dict:
        return render.user(await self._db.run(users.thd_get_or_404, name))

    @route("/user/<name>", ["PUT"], access="self-or-staff")
    async def update_user(self, request: IRequest, name: str) -> dict:
        fields = _fields(read_json(request))
        target = await self._target(request, name)
        if fields.role not in (None, target.role) and not caller(request).is_admin:
            raise Forbidden("Role: only admins change roles")
        user = await self._db.run(users.thd_update, name, fields, actor(request))
        return render.user(user)

    @route("/user/<name>", ["DELETE"], access="self-or-staff")
    async def delete_user(self, request: IRequest, name: str) -> str:
        await self._target(request, name)
        deleted = await self._db.run(users.thd_delete, name, actor(request), self._on_user_delete)
        # The removed images' files, once their rows are gone (what a crash
        # here leaves, the next start's sweep removes).
        if self._store is not None:
            for image_uuid in deleted.removed_images:
                await self._store.remove_image(image_uuid)
        return "Successfully deleted user"

    # -- API tokens ---------------------------------------------------------

    @route("/user/<name>/tokens", ["POST"], access="self-or-admin")
    async def create_token(self, request: IRequest, name: str) -> dict:
        body = (
            read_json(request)
            if request.getHeader("content-length") not in (None, "0")
            else Fields({})
        )
        label = body.str("Name") or ""
        days = body.int("ExpiresInDays")
        expires = None
        if days is not None:
            if not 0 < days <= MAX_TOKEN_DAYS:
                raise BadRequest(f"ExpiresInDays: between 1 and {MAX_TOKEN_DAYS}")
            expires = utcnow() + dt.timedelta(days=days)
        token, token_secret = await self._db.run(
            tokens.thd_create_token, name, label, actor(request), expires, _bearer(request)
        )
        request.setResponseCode(201)
        request.setHeader(b"cache-control", b"no-store")
        return render.token(token, token_secret)

    @route("/user/<name>/tokens", ["GET"], access="self-or-admin")
    async def list_tokens(self, request: IRequest, name: str) -> list:
        if await self._db.run(users.thd_get, name) is None:
            raise NotFound(f"no user {name!r}")
        return [render.token(t) for t in await self._db.run(tokens.thd_list_tokens, name)]

    @route("/user/<name>/tokens/<int:token_id>", ["DELETE"], access="self-or-admin")
    async def delete_token(self, request: IRequest, name: str, token_id: int) -> str:
        await self._db.run(tokens.thd_delete_token, name, token_id, actor(request))
        return "Successfully deleted token"

    # -- sessions -----------------------------------------------------------

    @route("/user/session", ["POST"], access="signed-in")
    async def start_session(self, request: IRequest) -> dict:
        """Sign a browser in with an API token: the token is sent once and
        the browser keeps only the session cookie (HttpOnly) and its CSRF
        token."""
        if _bearer(request) is None:
            raise BadRequest("send the API token as 'Authorization: Bearer <token>'")
        user = caller(request)
        csrf = await self._sessions.start(request, user)
        name = user.username
        await self._db.run(events.thd_record, name, "user.login", "user", name, "token")
        return {"User": render.user(user), "CSRF": csrf}

    @route("/user/logout", ["POST"], access="signed-in")
    async def logout(self, request: IRequest) -> str:
        await self._sessions.end(request)
        return "Successfully logged out"

    # -- audit log ----------------------------------------------------------

    @route("/events", ["GET"], access="admin")
    async def list_events(self, request: IRequest) -> list:
        args = query_args(request)
        limit = int_arg(args, "limit", 100)
        before = int_arg(args, "before", None)
        found = await self._db.run(
            events.thd_list,
            args.get("target_type"),
            args.get("target"),
            min(limit, 1000),
            before,
        )
        return [render.event(e) for e in found]
