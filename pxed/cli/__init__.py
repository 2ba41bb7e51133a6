"""pxectl: pxed's command line, on the public HTTP API only.

Exit codes: 0 ok, 1 the server refused or failed the request, 2 usage,
3 not logged in or the token refused (401/403), 4 not found, 5 could not
connect.  Shell completion is click's:
``eval "$(_PXECTL_COMPLETE=bash_source pxectl)"``."""

from __future__ import annotations

import click

from pxed.cli import account, builds, demo, images, leases, machines, setups
from pxed.cli.client import EXIT_CODES

EPILOG = "Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + "."


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Drive a pxed server: machines, images, setups, deploys, users."""


main.add_command(account.login)
main.add_command(account.whoami)
main.add_command(account.users)
main.add_command(account.tokens)
main.add_command(account.keys)
main.add_command(machines.machines)
main.add_command(machines.queue)
main.add_command(machines.events)
main.add_command(machines.logs)
main.add_command(machines.deploy)
main.add_command(leases.leases)
main.add_command(images.images)
main.add_command(setups.setups)
main.add_command(builds.build)
main.add_command(demo.demo)
