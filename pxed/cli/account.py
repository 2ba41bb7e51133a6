"""login, whoami, users, tokens and SSH keys."""

from __future__ import annotations

import click

from pxed.cli import config
from pxed.cli.client import AUTH, Api, CliError, api
from pxed.cli.output import fields, json_option, show, show_table

USER_FIELDS = ("Username", "Name", "Email", "Role", "GitHub", "CreatedAt")


@click.command()
@click.argument("url")
@click.option(
    "--token",
    envvar="PXED_TOKEN",
    prompt="API token",
    hide_input=True,
    help="An API token (pxu_…); asked for when not given.",
)
def login(url: str, token: str) -> None:
    """Check TOKEN against the server at URL and remember both."""
    try:
        me = Api(url, token.strip()).me()
    except CliError as e:
        if e.exit_code == AUTH:
            raise CliError(f"{url} refused the token: {e.message}", AUTH) from e
        raise
    path = config.save(url, token.strip())
    click.echo(f"Logged in to {url} as {me['Username']} ({me['Role']}); saved in {path}")


@click.command()
@json_option
def whoami(as_json: bool) -> None:
    """The user the token belongs to."""
    show(api().me(), as_json, lambda u: fields(u, USER_FIELDS))


@click.group()
def users() -> None:
    """Users (moderators and admins): list, show, create, edit, delete."""


@users.command("list")
@json_option
def users_list(as_json: bool) -> None:
    """Every user."""
    show_table(
        api().get("/users"),
        as_json,
        [
            ("USERNAME", "Username"),
            ("ROLE", "Role"),
            ("EMAIL", "Email"),
            ("NAME", "Name"),
        ],
    )


@users.command("show")
@click.argument("name")
@json_option
def users_show(name: str, as_json: bool) -> None:
    """One user."""
    show(api().get(f"/user/{name}"), as_json, lambda u: fields(u, USER_FIELDS))


def _user_body(name: str | None, email: str | None, role: str | None) -> dict:
    return {k: v for k, v in (("Name", name), ("Email", email), ("Role", role)) if v is not None}


role_option = click.option("--role", type=click.Choice(["user", "moderator", "admin"]))


@users.command("create")
@click.argument("username")
@click.option("--email", required=True)
@click.option("--name", help="The full name.")
@role_option
@json_option
def users_create(username: str, email: str, name, role, as_json: bool) -> None:
    """A new user (admins); `pxectl tokens create --user NAME` gives it a token."""
    body = {"Username": username, **_user_body(name, email, role or "user")}
    show(api().post("/user", body), as_json, lambda u: click.echo(f"Created {u['Username']}"))


@users.command("edit")
@click.argument("username")
@click.option("--email")
@click.option("--name", help="The full name.")
@role_option
@json_option
def users_edit(username: str, email, name, role, as_json: bool) -> None:
    """Change a user's name, e-mail or role (roles: admins)."""
    body = _user_body(name, email, role)
    if not body:
        raise click.UsageError("nothing to change: give --name, --email or --role")
    show(api().put(f"/user/{username}", body), as_json, lambda u: fields(u, USER_FIELDS))


@users.command("delete")
@click.argument("username")
def users_delete(username: str) -> None:
    """Delete a user (what it owns goes as the server's on_user_delete says)."""
    api().delete(f"/user/{username}")
    click.echo(f"Deleted {username}")


@click.group()
def tokens() -> None:
    """Your API tokens (or another user's, for admins: --user)."""


user_option = click.option("--user", help="Whose tokens (default: yours).")


def _owner(server: Api, user: str | None) -> str:
    return user or server.me()["Username"]


@tokens.command("list")
@user_option
@json_option
def tokens_list(user: str | None, as_json: bool) -> None:
    """The tokens (never their secrets)."""
    server = api()
    show_table(
        server.get(f"/user/{_owner(server, user)}/tokens"),
        as_json,
        [
            ("ID", "ID"),
            ("NAME", "Name"),
            ("PREFIX", "Prefix"),
            ("CREATED", "CreatedAt"),
            ("EXPIRES", lambda t: t["ExpiresAt"] or "never"),
            ("LAST USED", lambda t: t["LastUsedAt"] or "never"),
        ],
    )


@tokens.command("create")
@click.option("--name", default="", help="A label for the token.")
@click.option("--days", type=click.IntRange(1, 3650), help="Expires after this many days.")
@user_option
@json_option
def tokens_create(name: str, days: int | None, user: str | None, as_json: bool) -> None:
    """A new token; its secret is shown this once."""
    server = api()
    body: dict = {"Name": name}
    if days is not None:
        body["ExpiresInDays"] = days
    created = server.post(f"/user/{_owner(server, user)}/tokens", body)
    show(created, as_json, lambda t: click.echo(t["Token"]))


@tokens.command("revoke")
@click.argument("token_id", type=int)
@user_option
def tokens_revoke(token_id: int, user: str | None) -> None:
    """Revoke the token TOKEN_ID (see `tokens list`)."""
    server = api()
    server.delete(f"/user/{_owner(server, user)}/tokens/{token_id}")
    click.echo(f"Revoked token {token_id}")


@click.group()
def keys() -> None:
    """Your SSH public keys, written into the machines you deploy
    (or another user's, for admins: --user)."""


keys_user_option = click.option("--user", help="Whose keys (default: yours).")


@keys.command("list")
@keys_user_option
@json_option
def keys_list(user: str | None, as_json: bool) -> None:
    """The keys, with their fingerprints."""
    server = api()
    show_table(
        server.get(f"/user/{_owner(server, user)}/keys"),
        as_json,
        [
            ("ID", "ID"),
            ("TYPE", "Type"),
            ("FINGERPRINT", "Fingerprint"),
            ("COMMENT", "Comment"),
            ("ADDED", "CreatedAt"),
        ],
    )


@keys.command("add")
@click.argument("public_key_file", type=click.File("r"))
@keys_user_option
@json_option
def keys_add(public_key_file, user: str | None, as_json: bool) -> None:
    """Add the public key in PUBLIC_KEY_FILE (e.g. ~/.ssh/id_ed25519.pub;
    - reads it from standard input)."""
    line = public_key_file.read(64 * 1024).strip()
    server = api()
    added = server.post(f"/user/{_owner(server, user)}/keys", {"Key": line})
    show(added, as_json, lambda k: click.echo(f"Added key {k['ID']} {k['Fingerprint']}"))


@keys.command("delete")
@click.argument("key_id", type=int)
@keys_user_option
def keys_delete(key_id: int, user: str | None) -> None:
    """Remove the key KEY_ID (see `keys list`)."""
    server = api()
    server.delete(f"/user/{_owner(server, user)}/keys/{key_id}")
    click.echo(f"Deleted key {key_id}")
