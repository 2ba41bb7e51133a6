"""Human tables by default, JSON with --json."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


# (heading, the row's field or a function of the row)
Column = tuple[str, str | Callable[[dict], Any]]


def table(rows: Sequence[dict], columns: Sequence[Column]) -> None:
    getters = [get if callable(get) else (lambda r, k=get: r.get(k)) for _, get in columns]
    cells = [[h for h, _ in columns]] + [
        ["" if (v := get(r)) is None else str(v) for get in getters] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def fields(data: dict, keys: Sequence[str]) -> None:
    """One ``Key: value`` per line, for ``show`` commands."""
    width = max(len(k) for k in keys)
    for k in keys:
        value = data.get(k)
        if isinstance(value, dict | list):
            value = json.dumps(value)
        click.echo(f"{k + ':':<{width + 1}} {'' if value is None else value}")


def show(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        emit_json(data)
    else:
        render(data)


def show_table(data: Any, as_json: bool, columns: Sequence[Column]) -> None:
    """A listing: its JSON, or a table of *columns*."""
    show(data, as_json, lambda rows: table(rows, columns))


def size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
