"""A user's SSH public keys: ``GET``/``POST /user/{name}/keys``,
``DELETE /user/{name}/keys/{id}``.  Adding a key to someone is a way into
every machine he deploys, so only he and admins change them; staff may
read them (they are public keys)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from pxed import sshkey
from pxed.db import sshkeys
from pxed.db.pool import DBPool
from pxed.web import render
from pxed.web.auth import actor
from pxed.web.body import read_json
from pxed.web.router import route


class SSHKeysResource:
    def __init__(self, db: DBPool) -> None:
        self._db = db

    @route("/user/<name>/keys", ["GET"], access="self-or-staff")
    async def list_keys(self, request: IRequest, name: str) -> list:
        """The user's SSH public keys."""
        return [render.ssh_key(k) for k in await self._db.run(sshkeys.thd_list, name)]

    @route("/user/<name>/keys", ["POST"], access="self-or-admin")
    async def add_key(self, request: IRequest, name: str) -> dict:
        """Add an SSH public key (``{"Key": "ssh-ed25519 AAAA… comment"}``)."""
        key = sshkey.parse(read_json(request).str("Key", required=True, max_length=sshkey.MAX_LINE))
        added = await self._db.run(sshkeys.thd_add, name, key, actor(request))
        request.setResponseCode(201)
        return render.ssh_key(added)

    @route("/user/<name>/keys/<int:key_id>", ["DELETE"], access="self-or-admin")
    async def delete_key(self, request: IRequest, name: str, key_id: int) -> str:
        """Remove one of the user's SSH public keys."""
        await self._db.run(sshkeys.thd_delete, name, key_id, actor(request))
        return "Successfully deleted key"
