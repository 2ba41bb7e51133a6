"""pxed-admin: administration from the command line, on the same
configuration as the daemon."""

from __future__ import annotations

import argparse
import sys

from pxed import config as pxed_config
from pxed.db import migrate
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except pxed_config.ConfigError as e:
        print(f"pxed-admin: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
