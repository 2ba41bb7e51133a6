"""login, whoami, users and tokens."""

from __future__ import annotations

import click

from pxed.cli import config
from pxed.cli.client import AUTH, Api, CliError, api
from pxed.cli.output import fields, json_option, show, table

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
    """Users (moderators and admins)."""


@users.command("list")
@json_option
def users_list(as_json: bool) -> None:
    """Every user."""
    show(
        api().get("/users"),
        as_json,
        lambda rows: table(
            rows,
            [
                ("USERNAME", lambda u: u["Username"]),
                ("ROLE", lambda u: u["Role"]),
                ("EMAIL", lambda u: u["Email"]),
                ("NAME", lambda u: u["Name"]),
            ],
        ),
    )


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
    show(
        server.get(f"/user/{_owner(server, user)}/tokens"),
        as_json,
        lambda rows: table(
            rows,
            [
                ("ID", lambda t: t["ID"]),
                ("NAME", lambda t: t["Name"]),
                ("PREFIX", lambda t: t["Prefix"]),
                ("CREATED", lambda t: t["CreatedAt"]),
                ("EXPIRES", lambda t: t["ExpiresAt"] or "never"),
                ("LAST USED", lambda t: t["LastUsedAt"] or "never"),
            ],
        ),
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
