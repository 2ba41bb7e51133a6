"""Signing in with a GitHub account: which user it is, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from pxed.db import events, users
from pxed.db.errors import ConflictError
from pxed.db.users import User, UserFields


@dataclass(frozen=True)
class GitHubUser:
    id: int
    login: str
    name: str
    # The profile's public e-mail, else the primary verified one, else "".
    email: str | None
    # The primary verified address from /user/emails; None when not asked
    # (nothing to compare it with) or when there is none.
    verified_email: str | None

    @property
    def username(self) -> str:
        return self.login.lower()


def thd_needs_verified_email(conn: sa.Connection, github_id: int, username: str) -> bool:
    """Whether signing in would link a local account, which takes the
    verified primary e-mail to decide."""
    if users.thd_get_by_github(conn, github_id) is not None:
        return False
    local = users.thd_get(conn, username)
    return local is not None and local.github_id is None


def thd_sign_in(conn: sa.Connection, gh: GitHubUser) -> User:
    """The user this GitHub account signs in as: the one linked to it, else
    a local account of the same name whose e-mail is the account's verified
    primary e-mail (linked now), else a new user; the sign-in is recorded."""
    user = users.thd_get_by_github(conn, gh.id)
    if user is None:
        username = gh.username
        local = users.thd_get(conn, username)
        if local is None:
            user = users.thd_create(
                conn,
                username,
                UserFields(name=gh.name[:255], email=(gh.email or "")[:255], role="user"),
                username,
                github_id=gh.id,
            )
        elif local.github_id is not None:
            raise ConflictError(
                f"a local account named {username!r} exists and is linked to another GitHub account"
            )
        elif not (
            local.email and gh.verified_email and local.email.lower() == gh.verified_email.lower()
        ):
            raise ConflictError(
                f"a local account named {username!r} exists and its e-mail is not the "
                "verified primary e-mail of this GitHub account; ask an admin"
            )
        else:
            users.thd_link_github(conn, username, gh.id)
            events.thd_record(conn, username, "user.link", "user", username, f"github:{gh.id}")
            user = users.thd_get(conn, username)
            assert user is not None
    events.thd_record(conn, user.username, "user.login", "user", user.username, "github")
    return user
