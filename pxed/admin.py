"""pxed-admin: administration from the command line, on the same
configuration as the daemon."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

import sqlalchemy as sa

from pxed import config as pxed_config
from pxed.bootnet import interface, standalone
from pxed.db import migrate, tokens, users
from pxed.db.errors import DomainError
from pxed.db.pool import make_engine


def _config(args: argparse.Namespace) -> pxed_config.Config:
    return pxed_config.load(args.config, {"data_dir": args.data_dir, "database": args.database})


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    engine = make_engine(_config(args).database_url)
    before = migrate.current(engine)
    migrate.upgrade(engine)
    after = migrate.current(engine)
    print(
        f"database schema {before or 'empty'} -> {after}"
        if before != after
        else f"database schema is current ({after})"
    )
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    engine = make_engine(_config(args).database_url)
    rev = migrate.current(engine)
    print(f"{rev or 'empty'} (this pxed: {migrate.head()})")
    return 0


def _engine_at_head(args: argparse.Namespace):
    engine = make_engine(_config(args).database_url)
    rev = migrate.current(engine)
    if rev != migrate.head():
        raise SystemExit(
            f"pxed-admin: error: database schema is {rev or 'empty'}, expected "
            f"{migrate.head()}; run `pxed-admin db upgrade` (or start pxed once)"
        )
    return engine


def cmd_create_user(args: argparse.Namespace) -> int:
    engine = _engine_at_head(args)
    fields = users.UserFields(name=args.name or "", email=args.email or "", role=args.role)
    try:
        with engine.begin() as conn:
            users.thd_create(conn, args.username, fields, actor="pxed-admin")
            token = None
            if args.token:
                _, token = tokens.thd_create_token(
                    conn, args.username, "pxed-admin", actor="pxed-admin"
                )
    except DomainError as e:
        print(f"pxed-admin: error: {e.message}", file=sys.stderr)
        return 1
    print(f"created {args.role} {args.username}", file=sys.stderr)
    if token is not None:
        # The token alone on stdout, so `TOKEN=$(pxed-admin create-user …)` works.
        print(token)
    return 0


def cmd_create_token(args: argparse.Namespace) -> int:
    engine = _engine_at_head(args)
    try:
        with engine.begin() as conn:
            _, token = tokens.thd_create_token(conn, args.username, args.label, actor="pxed-admin")
    except DomainError as e:
        print(f"pxed-admin: error: {e.message}", file=sys.stderr)
        return 1
    print(token)
    return 0


def _pxed_url(args: argparse.Namespace, config: pxed_config.Config) -> str:
    """Where machines reach pxed: --url, base_url, or the boot interface's
    address and the configured port."""
    if args.url:
        return args.url.rstrip("/")
    if config.base_url:
        return config.base_url.rstrip("/")
    if config.boot_dhcp_interface:
        try:
            address = interface.ipv4(config.boot_dhcp_interface)
        except interface.InterfaceError as e:
            raise SystemExit(f"pxed-admin: error: boot_dhcp_interface: {e}; give --url") from None
        port = config.port.split(":")[1] if config.port.count(":") else ""
        if port.isdigit() and port != "0":
            scheme = "https" if config.port.startswith("ssl:") else "http"
            return f"{scheme}://{address.ip}:{port}"
    raise SystemExit(
        "pxed-admin: error: where do machines reach pxed? give --url http://<pxed-host>:4848"
        " (or set base_url)"
    )


def cmd_boot_network_config(args: argparse.Namespace) -> int:
    config = _config(args)
    url = _pxed_url(args, config)
    if args.isc_dhcp:
        host = urlsplit(url).hostname or ""
        print(standalone.isc_dhcp(url, config.boot_dhcp_efi, args.tftp_server or host), end="")
    else:
        print(standalone.dnsmasq(url, config.boot_dhcp_efi, str(config.boot_dhcp_ipxe_dir)), end="")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pxed-admin", description=__doc__)
    p.add_argument("-c", "--config", help="TOML configuration file (as for twistd -n pxed)")
    p.add_argument("-d", "--data-dir", help="data directory [default: ./var]")
    p.add_argument("--database", help="SQLAlchemy URL [default: SQLite in the data dir]")
    sub = p.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True
    )
    db.add_parser("upgrade", help="upgrade the schema to this version of pxed").set_defaults(
        func=cmd_db_upgrade
    )
    db.add_parser("current", help="show the schema revision").set_defaults(func=cmd_db_current)

    cu = sub.add_parser("create-user", help="create a user (and print an API token)")
    cu.add_argument("username")
    cu.add_argument("--name", help="full name")
    cu.add_argument("--email", help="e-mail address")
    cu.add_argument("--role", choices=users.ROLES, default="user")
    cu.add_argument("--token", action="store_true", help="also create an API token and print it")
    cu.set_defaults(func=cmd_create_user)

    ct = sub.add_parser("create-token", help="print a new API token for an existing user")
    ct.add_argument("username")
    ct.add_argument("--label", default="pxed-admin", help="a name to recognise the token by")
    ct.set_defaults(func=cmd_create_token)

    bn = sub.add_parser(
        "boot-network-config",
        help="print the DHCP configuration that netboots machines into pxed,"
        " for a lab that keeps its own DHCP server",
    )
    which = bn.add_mutually_exclusive_group()
    which.add_argument(
        "--dnsmasq", action="store_true", help="lines for dnsmasq.conf (the default)"
    )
    which.add_argument("--isc-dhcp", action="store_true", help="lines for ISC dhcpd.conf")
    bn.add_argument("--url", help="pxed's URL as machines reach it [base_url]")
    bn.add_argument(
        "--tftp-server",
        help="with --isc-dhcp: the TFTP server with iPXE's files [pxed's host]",
    )
    bn.set_defaults(func=cmd_boot_network_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except pxed_config.ConfigError as e:
        print(f"pxed-admin: error: {e}", file=sys.stderr)
        return 2
    except sa.exc.OperationalError as e:
        print(f"pxed-admin: error: cannot open database: {e.orig}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
